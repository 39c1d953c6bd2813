"""Answering instruction records with a model and writing them (the book's section 7.7)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, extract_response, get_prompt_style
from scratchgpt.data.prompts import render_prompt, turn_stops
from scratchgpt.fileio import PathLike

RESPONSES_FILE = "responses.json"


def generate_responses(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, str]],
    style: str = DEFAULT_STYLE,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Each record with a ``model_response``: greedy, stopping at <|endoftext|> or the next
    user turn, prompt and response marker removed (the book's section 7.7)."""
    from tqdm import tqdm

    from scratchgpt.generation import generate_text

    st = get_prompt_style(style)
    out: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(records),
        desc="responses",
        unit="rec",
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                chunk = records[start : start + batch_size]
                prompts = [render_prompt(e, st) for e in chunk]
                texts = generate_text(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    temperature=0.0,
                    stop_strings=turn_stops(st),
                )
                for entry, text in zip(chunk, texts):
                    out.append({**entry, "model_response": extract_response(str(text), "", st)})
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out


def write_responses(
    path: PathLike, records: Sequence[Mapping[str, Any]], *, overwrite: bool = False
) -> Path:
    """Write records (with ``model_response``) as a JSON list, atomically."""
    from scratchgpt.fileio import atomic_write_text

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    return atomic_write_text(p, json.dumps(list(records), indent=2, ensure_ascii=False) + "\n")
