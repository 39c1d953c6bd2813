"""Prepare a corpus for pretraining: tokenize text files or JSONL in parallel into token shards.

``prepare(inputs, out_dir)`` reads every document (a text file, or one JSONL record), appends
``<|endoftext|>`` to each, and writes ``train_000000.bin``, ... ``val_000000.bin`` (see
``scratchgpt.data.shards``), ``tokenizer.json`` and ``meta.json`` into ``out_dir``.

Everything is written into a temporary folder next to ``out_dir`` that is renamed into place at
the end, so an interrupted run leaves no half-prepared ``out_dir`` behind; rerunning starts over.
The output depends only on the inputs and the options, never on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scratchgpt import __version__
from scratchgpt.data._tokenizer import resolve_tokenizer
from scratchgpt.data.documents import JSONL_SUFFIXES as JSONL_SUFFIXES
from scratchgpt.data.documents import WorkUnit, collect_files, work_units
from scratchgpt.data.shards import ShardWriter, dtype_for_vocab
from scratchgpt.errors import OVERWRITE_ADVICE, Advice, ConfigError, DataError, OutputExistsError
from scratchgpt.fileio import PathLike, atomic_folder, read_json, write_json

FORMAT = "scratchgpt-token-shards"
FORMAT_VERSION = 1
ENCODING_ERRORS = ("strict", "replace", "ignore")


@dataclass
class PrepareResult:
    """What ``prepare`` wrote: counts per split, shard files, timing."""

    out_dir: Path
    documents: dict[str, int]
    tokens: dict[str, int]
    shards: dict[str, list[dict[str, Any]]]
    seconds: float
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        """Tokens over all splits."""
        return sum(self.tokens.values())

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the whole run, reading and writing included."""
        return self.total_tokens / self.seconds if self.seconds > 0 else float("inf")


# -- tokenizing (in worker processes) -----------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(spec: tuple[str, Any], eot_id: int, dtype: str) -> None:
    kind, value = spec
    if kind == "file":
        from scratchgpt.tokenizers import load_tokenizer

        value = load_tokenizer(value)
    _WORKER.update(tok=value, eot=eot_id, dtype=np.dtype(dtype))


def _encode_items(items: list[tuple[str, bool]]) -> list[np.ndarray]:
    """Encode texts as ordinary text (a literal "<|endoftext|>" is not special), add EOT."""
    tok, eot, dtype = _WORKER["tok"], _WORKER["eot"], _WORKER["dtype"]
    out = []
    for text, add_eot in items:
        ids = tok.encode_ordinary(text) if text else []
        if add_eot:
            ids.append(eot)
        out.append(np.array(ids, dtype=dtype))
    return out


# -- writing shards ------------------------------------------------------------------------------


class _SplitSink:
    """Rolls one split's tokens into shards of ``shard_tokens`` tokens."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, vocab_size: int) -> None:
        self.folder, self.split = folder, split
        self.shard_tokens, self.vocab_size = shard_tokens, vocab_size
        self.writer: ShardWriter | None = None
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self.documents = 0

    def write(self, ids: np.ndarray) -> None:
        pos = 0
        while pos < len(ids):
            if self.writer is None:
                name = f"{self.split}_{len(self.shards):06d}.bin"
                self.writer = ShardWriter(self.folder / name, self.vocab_size)
                self.shards.append({"file": name, "tokens": 0})
            take = ids[pos : pos + self.shard_tokens - self.writer.num_tokens]
            self.writer.write(take)
            pos += len(take)
            self.tokens += len(take)
            if self.writer.num_tokens >= self.shard_tokens:
                self._close()

    def _close(self) -> None:
        assert self.writer is not None
        self.shards[-1]["tokens"] = self.writer.close().num_tokens
        self.writer = None

    def finish(self) -> None:
        if self.writer is not None:
            self._close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


# -- the command ---------------------------------------------------------------------------------


def _check_replaceable(out: Path) -> None:
    """Only an empty folder or one written by prepare may be deleted by overwrite=True."""
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another output folder")
    if not any(out.iterdir()):
        return
    meta_path = out / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else None
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT):
        raise DataError(
            f"{out}: exists and is not a prepared data folder (no scratchgpt meta.json); refusing "
            "to delete it even with overwrite; choose another output folder or remove it yourself"
        )


def _tokenizer_info(tok: Any) -> tuple[int, int, dict[str, Any] | str]:
    vocab_size = getattr(tok, "vocab_size", None) or getattr(tok, "n_vocab", None)
    eot = getattr(tok, "eot_id", None)
    if eot is None:
        eot = getattr(tok, "eot_token", None)
    if not isinstance(vocab_size, int) or eot is None:
        raise ConfigError(
            f"tokenizer {tok!r} has no vocab_size or end-of-text id; use a scratchgpt tokenizer"
        )
    config = tok.to_config() if hasattr(tok, "to_config") else repr(tok)
    return vocab_size, int(eot), config


def prepare(
    inputs: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    tokenizer: Any = "gpt2",
    *,
    jsonl_field: str | None = None,
    glob: str = "*.txt",
    val_fraction: float = 0.0005,
    shard_tokens: int = 100_000_000,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    encoding_errors: str = "strict",
    seed: int = 1234,
    chunk_bytes: int = 4 << 20,
    command: str | None = None,
) -> PrepareResult:
    """Tokenize text files, folders of them (recursive, ``glob``) or JSONL files into shards.

    Each document (a file, or a JSONL record's ``jsonl_field``, default "text") is followed by
    the end-of-text token. Whole documents go to the validation split with probability
    ``val_fraction``, drawn from a generator seeded with ``seed``. Work is shared by
    ``num_workers`` processes (default: all cores) in units of about ``chunk_bytes`` of input;
    text files larger than that are cut at line breaks that do not change their tokens.
    """
    started = time.perf_counter()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    num_workers = _check_options(
        inputs, encoding_errors, val_fraction, shard_tokens, chunk_bytes, num_workers
    )
    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} exists; refusing to overwrite it", OVERWRITE_ADVICE)
        _check_replaceable(out)
    files = collect_files(inputs, glob, jsonl_field, out)
    tok = resolve_tokenizer(tokenizer)
    vocab_size, eot_id, tok_config = _tokenizer_info(tok)
    dtype = dtype_for_vocab(vocab_size)
    total_bytes = sum(f.stat().st_size for f, _ in files)
    # More processes than units of work would only cost start-up time.
    num_workers = max(1, min(num_workers, -(-total_bytes // chunk_bytes)))
    options = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchgpt_version": __version__,
        "tokenizer": tok_config,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "dtype": dtype.name,
        "inputs": [str(Path(p).resolve()) for p in inputs],
        "num_files": len(files),
        "glob": glob,
        "jsonl_field": jsonl_field,
        "val_fraction": float(val_fraction),
        "seed": seed,
        "shard_tokens": shard_tokens,
        "chunk_bytes": chunk_bytes,
        "encoding_errors": encoding_errors,
        "command": command,
    }
    documents = {"train": 0, "val": 0}
    units = work_units(
        files,
        jsonl_field=jsonl_field or "text",
        errors=encoding_errors,
        chunk_bytes=chunk_bytes,
        val_fraction=float(val_fraction),
        seed=seed,
        documents=documents,
    )
    # Everything is written into a temporary sibling folder, renamed into place at the end.
    with atomic_folder(out, overwrite=overwrite) as tmp:
        tok_file = "tokenizer.json" if hasattr(tok, "save") else None
        if tok_file is not None:
            tok.save(tmp / tok_file)
        spec = ("file", str(tmp / tok_file)) if tok_file else ("object", tok)
        sinks = {s: _SplitSink(tmp, s, shard_tokens, vocab_size) for s in ("train", "val")}
        with _Progress(total_bytes, sinks, progress) as bar:
            _tokenize_all(units, bar, num_workers, tok, spec, eot_id, dtype)
        meta = {
            **options,
            "tokenizer_file": tok_file,
            "documents": dict(documents),
            "tokens": {s: k.tokens for s, k in sinks.items()},
            "shards": {s: k.shards for s, k in sinks.items()},
        }
        write_json(tmp / "meta.json", meta)
    return PrepareResult(
        out_dir=out,
        documents=dict(meta["documents"]),
        tokens=dict(meta["tokens"]),
        shards=meta["shards"],
        seconds=time.perf_counter() - started,
        meta=meta,
        notes=_notes(documents, float(val_fraction)),
    )


def _check_options(
    inputs: list[Any],
    encoding_errors: str,
    val_fraction: float,
    shard_tokens: int,
    chunk_bytes: int,
    num_workers: int | None,
) -> int:
    """Validate prepare's options; returns the number of workers to use."""
    if not inputs:
        raise DataError("no inputs given: pass text files, folders or JSONL files")
    if encoding_errors not in ENCODING_ERRORS:
        raise ConfigError(
            f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}, got {encoding_errors!r}"
        )
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    for name, value in (("shard_tokens", shard_tokens), ("chunk_bytes", chunk_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    return num_workers


def _notes(documents: dict[str, int], val_fraction: float) -> list[str]:
    if val_fraction > 0 and documents["val"] == 0:
        return [
            f"no document fell into the validation split ({documents['train']} documents, "
            f"val_fraction={val_fraction}); the split is by whole document, so give more "
            "documents (a folder of files or a JSONL file) or a larger val_fraction"
        ]
    return []


class _Progress:
    """Writes finished units to the split sinks and shows bytes, documents and tokens done;
    on leaving, finishes the sinks' last shards (or drops them after an error)."""

    def __init__(self, total_bytes: int, sinks: dict[str, _SplitSink], enabled: bool) -> None:
        from scratchgpt.progress import progress

        self.sinks = sinks
        self.docs = 0
        # A bar on a terminal, a line every few seconds in a log.
        self.bar = progress(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="tokenizing",
            enabled=None if enabled else False,
        )

    def consume(self, nbytes: int, splits: list[str], docs: int, arrays: list[np.ndarray]) -> None:
        for split, ids in zip(splits, arrays):
            self.sinks[split].write(ids)
        self.docs += docs
        self.bar.update(nbytes)
        tokens = self.sinks["train"].tokens + self.sinks["val"].tokens
        self.bar.set_postfix(docs=f"{self.docs:,}", tokens=f"{tokens:,}", refresh=False)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.bar.close()
        # Complete shards are published on success; partial ones are dropped on any error.
        for sink in self.sinks.values():
            if exc_type is None:
                sink.finish()
            else:
                sink.abort()


def _tokenize_all(
    units: Iterator[WorkUnit],
    out: _Progress,
    num_workers: int,
    tok: Any,
    spec: tuple[str, Any],
    eot_id: int,
    dtype: np.dtype,
) -> None:
    try:
        if num_workers == 1:
            _init_worker(("object", tok), eot_id, dtype.str)
            for nbytes, items, splits, docs in units:
                out.consume(nbytes, splits, docs, _encode_items(items))
            return
        ctx = multiprocessing.get_context("spawn")  # same on every OS; no forked torch state
        # An executor (unlike multiprocessing.Pool) fails instead of hanging when a worker dies.
        with ProcessPoolExecutor(num_workers, ctx, _init_worker, (spec, eot_id, dtype.str)) as ex:
            # A bounded window of work in flight keeps memory flat however large the corpus is.
            inflight: deque[tuple[int, list[str], int, Future]] = deque()
            try:
                for nbytes, items, splits, docs in units:
                    inflight.append((nbytes, splits, docs, ex.submit(_encode_items, items)))
                    if len(inflight) >= 2 * num_workers:
                        n, s, d, fut = inflight.popleft()
                        out.consume(n, s, d, fut.result())
                while inflight:
                    n, s, d, fut = inflight.popleft()
                    out.consume(n, s, d, fut.result())
            except BrokenProcessPool as e:
                raise DataError(
                    f"a tokenizer worker process died ({e})",
                    Advice(
                        "if this runs from an interactive prompt or stdin, run it from a script "
                        "file or use num_workers=1",
                        "run it again with --workers 1",
                        "--workers",
                    ),
                ) from None
            finally:
                for *_, fut in inflight:
                    fut.cancel()
    finally:
        _WORKER.clear()
