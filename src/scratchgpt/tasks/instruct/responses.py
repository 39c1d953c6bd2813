"""Answering instruction records with a model and writing them (the book's section 7.7).

A long run keeps its finished responses: :class:`PartialResponses` saves them next to the output
file (every half minute and when the run is interrupted), and ``generate_responses(done=...)``
continues after them. Greedy decoding over the same batches makes the continued run's responses
identical to those of an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, extract_response, get_prompt_style
from scratchgpt.data.prompts import render_prompt, turn_stops
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike
from scratchgpt.tasks.instruct.config import RESPONSE_PROMPTS

RESPONSES_FILE = "responses.json"
PARTIAL_SUFFIX = ".partial"
RECORD_FIELDS = ("instruction", "input", "output")


def generate_responses(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, str]],
    style: str = DEFAULT_STYLE,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    response_prompt: str = "book",
    progress: bool | None = None,
    done: Sequence[Mapping[str, Any]] = (),
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Each record with a ``model_response``: greedy, stopping at <|endoftext|>.

    ``response_prompt="book"`` is the book's section 7.7: the prompt is the record's
    ``format_input`` alone, the model writes the response marker itself, and the response is
    what it generated with the marker removed and whitespace stripped. ``"marker"``: the prompt
    ends with the response marker, generation also stops where the model starts the next user
    turn, and that turn is cut off.

    ``done``: the responses of the first records, already finished (e.g. by an interrupted run,
    see :class:`PartialResponses`); only the rest are generated. ``on_batch`` is called with
    all finished responses after each batch. ``progress``: a bar on a terminal, a line every few
    seconds elsewhere (None), or nothing (False)."""
    from scratchgpt.generation import generate_text
    from scratchgpt.progress import progress as progress_bar

    if type(batch_size) is not int or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if response_prompt not in RESPONSE_PROMPTS:
        raise ConfigError(
            f"response_prompt must be one of {list(RESPONSE_PROMPTS)}, got {response_prompt!r}"
        )
    book = response_prompt == "book"
    st = get_prompt_style(style, tokenizer)
    out: list[dict[str, Any]] = [dict(r) for r in done]
    bar = progress_bar(
        total=len(records), initial=len(out), desc="responses", unit="records", enabled=progress
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(len(out), len(records), batch_size):
                chunk = records[start : start + batch_size]
                prompts = [st.format_input(e) if book else render_prompt(e, st) for e in chunk]
                texts = generate_text(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    temperature=0.0,
                    stop_strings=None if book else turn_stops(st),
                )
                # One extend: an interruption keeps whole batches only.
                out.extend(
                    {**entry, "model_response": _response(str(text), st, book)}
                    for entry, text in zip(chunk, texts)
                )
                bar.update(len(chunk))
                if on_batch is not None:
                    on_batch(out)
    finally:
        bar.close()
        model.train(was_training)
    return out


def _response(generated: str, st: Any, book: bool) -> str:
    """The answer in the generated continuation of a prompt."""
    if book:  # the book: generated_text[len(input_text):].replace("### Response:", "").strip()
        return generated.replace(st.marker, "").strip()
    return extract_response(generated, "", st)


def write_responses(
    path: PathLike, records: Sequence[Mapping[str, Any]], *, overwrite: bool = False
) -> Path:
    """Write records (with ``model_response``) as a JSON list, atomically."""
    from scratchgpt.fileio import atomic_write_text

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    return atomic_write_text(p, json.dumps(list(records), indent=2, ensure_ascii=False) + "\n")


def answer_test_split(
    model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]], opts: Any, run_dir: PathLike,
    *, progress: bool,
) -> tuple[Path, int]:  # fmt: skip
    """Answer a fine-tuning run's test ``records`` as its options ``opts`` say (prompt_style,
    response_tokens, response_batch_size, response_prompt) and write them to
    ``run_dir/responses.json``; returns (path, how many)."""
    responses = generate_responses(
        model,
        tokenizer,
        records,
        opts.prompt_style,
        max_new_tokens=opts.response_tokens,
        batch_size=opts.response_batch_size,
        response_prompt=opts.response_prompt,
        progress=None if progress else False,
    )
    path = write_responses(Path(run_dir) / RESPONSES_FILE, responses, overwrite=True)
    return path, len(responses)


class PartialResponses:
    """The finished responses of a run that writes ``out``, kept in ``<out>.partial`` (a JSON
    list, written atomically at most every ``every`` seconds and by :meth:`save`)."""

    def __init__(self, out: PathLike, every: float = 30.0) -> None:
        self.out = Path(out)
        self.path = self.out.with_name(self.out.name + PARTIAL_SUFFIX)
        self.every = every
        self.finished: list[dict[str, Any]] = []
        self.saved = 0
        self._last = time.monotonic()

    def update(self, finished: list[dict[str, Any]]) -> None:
        """Note the finished responses (an ``on_batch`` hook); saves when ``every`` has passed."""
        self.finished = finished
        if time.monotonic() - self._last >= self.every:
            self.save()

    def save(self) -> int:
        """Write the finished responses now (if there are new ones); returns how many."""
        from scratchgpt.fileio import atomic_write_json

        n = len(self.finished)
        if n > self.saved:
            atomic_write_json(self.path, list(self.finished))
            self.saved = n
        self._last = time.monotonic()
        return self.saved

    def load(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The finished responses to continue from: ``<out>.partial``, else a complete ``out``,
        else none. They must answer the first of ``records``, in order."""
        from scratchgpt.fileio import read_json

        src = self.path if self.path.exists() else self.out if self.out.exists() else None
        if src is None:
            return []
        saved = read_json(src)
        if not isinstance(saved, list) or len(saved) > len(records):
            raise DataError(
                f"{src}: holds {len(saved) if isinstance(saved, list) else 'no list of'} "
                f"responses for {len(records)} records; it comes from other data or options: "
                "drop --resume and pass --overwrite to start over"
            )
        for i, (old, rec) in enumerate(zip(saved, records)):
            if (
                not isinstance(old, dict)
                or "model_response" not in old
                or any(old.get(k) != rec.get(k) for k in RECORD_FIELDS)
            ):
                raise DataError(
                    f"{src}: response {i} does not answer record {i} of this run's records; "
                    "resume with the same --data, --split and --limit, or drop --resume and "
                    "pass --overwrite to start over"
                )
        self.finished = [dict(r) for r in saved]
        self.saved = len(saved) if src == self.path else 0
        return self.finished

    def remove(self) -> None:
        """Delete ``<out>.partial`` (the complete output has been written)."""
        self.path.unlink(missing_ok=True)
