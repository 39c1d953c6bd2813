"""Turn what a user passed as ``tokenizer=`` into an object with ``encode``/``decode``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def resolve_tokenizer(tokenizer: Any = None) -> Any:
    """None -> GPT-2; a name -> ``get_tokenizer(name)``; an existing path -> ``load_tokenizer``.

    Anything else is used as is, so a ``tiktoken.Encoding`` (the book's choice) works too.
    """
    if tokenizer is None:
        tokenizer = "gpt2"
    if isinstance(tokenizer, (str, os.PathLike)):
        from scratchgpt.tokenizers import get_tokenizer, load_tokenizer

        if isinstance(tokenizer, os.PathLike) or Path(tokenizer).exists():
            return load_tokenizer(tokenizer)
        return get_tokenizer(tokenizer)
    return tokenizer
