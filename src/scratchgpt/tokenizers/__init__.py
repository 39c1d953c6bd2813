"""Tokenizers: text <-> token ids (book chapter 2).

``get_tokenizer(name, **options)`` makes one by name, ``load_tokenizer(path)`` reads one that
``Tokenizer.save`` wrote, ``train_bpe`` learns a byte-level BPE from a corpus. Names:

- ``"simple"``: the book's regex word tokenizer (V2, with ``<|unk|>``); not lossless.
- ``"char"``: one token per character of a corpus's alphabet.
- ``"gpt2"``: GPT-2's byte-level BPE, identical to tiktoken's "gpt2" (backends "tiktoken", "scratch").
- ``"bpe"``: a byte-level BPE trained here with :func:`train_bpe`.
- ``"hf"``: a Hugging Face ``tokenizer.json`` with its model folder's settings (Llama 3.x, Qwen3),
  run by the ``tokenizers`` library; chat templates are in :mod:`scratchgpt.tokenizers.chat`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratchgpt.errors import ScratchGPTError, TokenizerError
from scratchgpt.fileio import PathLike, read_json
from scratchgpt.tokenizers.base import EOT, FORMAT, Tokenizer
from scratchgpt.tokenizers.bpe import GPT2_PATTERN, BPETokenizer, train_bpe
from scratchgpt.tokenizers.gpt2 import GPT2Tokenizer, tiktoken_gpt2_encoding
from scratchgpt.tokenizers.simple import UNK, CharTokenizer, SimpleTokenizer

__all__ = [
    "EOT",
    "GPT2_PATTERN",
    "NAMES",
    "UNK",
    "BPETokenizer",
    "CharTokenizer",
    "ChatTemplate",
    "GPT2Tokenizer",
    "HFTokenizer",
    "SimpleTokenizer",
    "Tokenizer",
    "family_template",
    "get_tokenizer",
    "load_tokenizer",
    "tiktoken_gpt2_encoding",
    "train_bpe",
]

NAMES = ("simple", "char", "gpt2", "bpe", "hf")

# The Hugging Face tokenizer and chat templates load the `tokenizers` and `jinja2` libraries;
# they are imported on first use, so commands that never touch them start as fast as before.
_LAZY = {
    "HFTokenizer": "scratchgpt.tokenizers.hf",
    "ChatTemplate": "scratchgpt.tokenizers.chat",
    "family_template": "scratchgpt.tokenizers.chat",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_OPTIONS = {
    "simple": {"corpus", "vocab"},
    "char": {"corpus", "chars", "special_tokens", "unk"},
    "gpt2": {"backend", "encoder_path", "vocab_path"},
    "bpe": {"path"},
    "hf": {"path"},
}


def get_tokenizer(name: str, **options: Any) -> Tokenizer:
    """Make a tokenizer by name.

    - ``get_tokenizer("simple", corpus=text)`` or ``(vocab={word: id})``
    - ``get_tokenizer("char", corpus=text, special_tokens=("<|endoftext|>",), unk=False)``
      or ``(chars=[...])``
    - ``get_tokenizer("gpt2", backend="tiktoken" | "scratch", encoder_path=None, vocab_path=None)``
    - ``get_tokenizer("bpe", path=saved_file)``
    - ``get_tokenizer("hf", path=model_folder)``: the folder's tokenizer.json and configs
    """
    if name not in _OPTIONS:
        raise TokenizerError(f"unknown tokenizer {name!r}; choose one of {', '.join(NAMES)}")
    unknown = set(options) - _OPTIONS[name]
    if unknown:
        raise TokenizerError(
            f"tokenizer {name!r} does not take option(s) {sorted(unknown)}; it takes "
            f"{sorted(_OPTIONS[name])} (a learned vocabulary is loaded with load_tokenizer(path))"
        )
    if name == "gpt2":
        return GPT2Tokenizer(**options)
    if name == "hf":
        if "path" not in options:
            raise TokenizerError(
                "tokenizer 'hf' needs path=FOLDER, a Hugging Face model folder with tokenizer.json"
            )
        from scratchgpt.tokenizers.hf import HFTokenizer

        return HFTokenizer.from_folder(options["path"])
    if name == "bpe":
        if "path" not in options:
            raise TokenizerError(
                "tokenizer 'bpe' needs path=FILE, a file saved after train_bpe "
                "(CLI: scratchgpt train-tokenizer)"
            )
        tok = load_tokenizer(options["path"])
        if not isinstance(tok, BPETokenizer):
            raise TokenizerError(f"{options['path']}: holds a {tok.name!r} tokenizer, not 'bpe'")
        return tok
    if name == "simple":
        if ("corpus" in options) == ("vocab" in options):
            raise TokenizerError(
                "tokenizer 'simple' needs exactly one of corpus=TEXT or vocab=DICT"
            )
        if "vocab" in options:
            return SimpleTokenizer(options["vocab"])
        return SimpleTokenizer.from_corpus(options["corpus"])
    if ("corpus" in options) == ("chars" in options):
        raise TokenizerError("tokenizer 'char' needs exactly one of corpus=TEXT or chars=[...]")
    extra = {k: options[k] for k in ("special_tokens", "unk") if k in options}
    if "chars" in options:
        return CharTokenizer(options["chars"], **extra)
    return CharTokenizer.from_corpus(options["corpus"], **extra)


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise TokenizerError(f"field {name!r} is missing")
    value = data[name]
    if not isinstance(value, kind):
        raise TokenizerError(f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def tokenizer_from_dict(data: Any) -> Tokenizer:
    """Rebuild a tokenizer from what :meth:`Tokenizer.save` wrote (already parsed JSON)."""
    if not isinstance(data, dict):
        raise TokenizerError("expected a JSON object")
    if data.get("format") != FORMAT:
        raise TokenizerError(
            f"field 'format' is {data.get('format')!r}, expected {FORMAT!r}: not a scratchgpt "
            "tokenizer file"
        )
    kind = _field(data, "type", str)
    if kind not in NAMES:
        raise TokenizerError(f"field 'type' is {kind!r}; known types: {', '.join(NAMES)}")
    version = _field(data, "version", int)
    if version != 1:
        raise TokenizerError(
            f"field 'version' is {version}, but this scratchgpt reads version 1; "
            "use a newer scratchgpt or save the tokenizer again"
        )
    if kind == "bpe":
        _field(data, "merges", list)
        return BPETokenizer.from_dict(data)
    if kind == "gpt2":
        return GPT2Tokenizer.from_dict(data)
    if kind == "hf":
        from scratchgpt.tokenizers.hf import HFTokenizer

        _field(data, "tokenizer", dict)
        return HFTokenizer.from_dict(data)
    if kind == "simple":
        vocab = _field(data, "vocab", dict)
        specials = _field(data, "special_tokens", list)
        return SimpleTokenizer(vocab, specials)
    chars = _field(data, "chars", list)
    specials = _field(data, "special_tokens", list)
    unk = _field(data, "unk", bool)
    return CharTokenizer(chars, specials, unk=unk)


def load_tokenizer(path: PathLike) -> Tokenizer:
    """Load a tokenizer saved by :meth:`Tokenizer.save`; errors name the file and the field.

    A Hugging Face model folder, or its tokenizer.json, loads as an :class:`HFTokenizer` (with
    the folder's settings).
    """
    if Path(path).is_dir():
        from scratchgpt.tokenizers.hf import HFTokenizer

        return HFTokenizer.from_folder(path)
    data = read_json(path)
    if isinstance(data, dict) and "format" not in data and "model" in data:
        from scratchgpt.tokenizers.hf import HFTokenizer

        # A Hugging Face tokenizer.json: the configs next to it complete it.
        if Path(path).name == "tokenizer.json":
            return HFTokenizer.from_folder(Path(path).parent)
        return HFTokenizer(data, source=str(path))
    try:
        return tokenizer_from_dict(data)
    except ScratchGPTError as e:
        raise TokenizerError(f"{path}: {e}") from None
