"""Prepare a corpus for pretraining: tokenize text files or JSONL in parallel into token shards.

``prepare(inputs, out_dir)`` reads every document (a text file, or one JSONL record), appends
``<|endoftext|>`` to each, and writes ``train_000000.bin``, ... ``val_000000.bin`` (see
``scratchgpt.data.shards``), ``tokenizer.json`` and ``meta.json`` into ``out_dir``.

Everything is written into a temporary folder next to ``out_dir`` that is renamed into place at
the end, so an interrupted run leaves no half-prepared ``out_dir`` behind; rerunning starts over.
The output depends only on the inputs and the options, never on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import secrets
import shutil
import sys
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
from scratchgpt.data.shards import ShardWriter, dtype_for_vocab
from scratchgpt.errors import ConfigError, DataError
from scratchgpt.fileio import PathLike, atomic_write_json, read_json

FORMAT = "scratchgpt-token-shards"
FORMAT_VERSION = 1
JSONL_SUFFIXES = (".jsonl", ".ndjson")
ENCODING_ERRORS = ("strict", "replace", "ignore")
_PRINTABLE = range(0x21, 0x7F)  # visible ASCII: never whitespace, always one byte in UTF-8


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


# -- reading documents ---------------------------------------------------------------------------


def _decode(data: bytes, path: Path, offset: int, line: int, errors: str) -> str:
    """Decode one piece of a file; errors name the byte offset and line in the whole file."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        pos = offset + e.start
        ln = line + data.count(b"\n", 0, e.start)
        bad = data[e.start : e.start + 4].hex(" ")
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {pos} (line {ln}; bytes {bad}): {e.reason}. "
            "Convert the file to UTF-8, or pass encoding_errors='replace' "
            "(CLI: --encoding-errors replace) to substitute invalid bytes."
        ) from None


def _safe_cut(buf: bytes) -> int:
    """Index just after a line break where a text can be cut without changing its tokens.

    The break must be ``\\n`` or ``\\r\\n`` between two visible ASCII characters: GPT-2's
    pre-tokenizer (and the simple regex tokenizers) then make that line break a token of its
    own, whether it sits mid-text or at the end, so encoding the two parts gives exactly the
    tokens of the whole. Returns 0 when there is no such break.
    """
    i = buf.rfind(b"\n", 0, len(buf) - 1)
    while i > 0:
        before = buf[i - 1]
        if before == 0x0D and i >= 2:
            before = buf[i - 2]
        if before in _PRINTABLE and buf[i + 1] in _PRINTABLE:
            return i + 1
        i = buf.rfind(b"\n", 0, i)
    return 0


def _text_pieces(path: Path, errors: str, chunk_bytes: int) -> Iterator[tuple[int, str, bool]]:
    """A text file as (bytes read, text, ends the document) pieces of about chunk_bytes."""
    offset, line = 0, 1
    buf = b""
    pending: tuple[int, str] | None = None
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk_bytes)
            buf += data
            cut = _safe_cut(buf) if data else len(buf)
            if cut:
                piece, buf = buf[:cut], buf[cut:]
                text = _decode(piece, path, offset, line, errors)
                offset += cut
                line += piece.count(b"\n")
                if pending is not None:
                    yield pending[0], pending[1], False
                pending = (cut, text)
            if not data:
                break
    if pending is not None:
        yield pending[0], pending[1], True


def _jsonl_pieces(path: Path, key: str, errors: str) -> Iterator[tuple[int, str, bool]]:
    """A JSONL file as one piece per record (blank lines skipped)."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                text = _decode(raw, path, offset, lineno, errors)
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"{path}: line {lineno}: invalid JSON at column {e.colno}: {e.msg}"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(
                        f"{path}: line {lineno}: expected a JSON object with a {key!r} field, "
                        f"got {type(record).__name__}"
                    )
                if key not in record:
                    fields = ", ".join(map(repr, record)) or "none"
                    raise DataError(
                        f"{path}: line {lineno}: no field {key!r} (fields: {fields}); pass "
                        "jsonl_field=NAME (CLI: --jsonl-field NAME) to name the text field"
                    )
                value = record[key]
                if not isinstance(value, str):
                    raise DataError(
                        f"{path}: line {lineno}: field {key!r} must be a string, "
                        f"got {type(value).__name__}"
                    )
                yield len(raw), value, True
            else:
                yield len(raw), "", True
            offset += len(raw)


def _is_output(f: Path, out: Path) -> bool:
    """Whether f lies in out_dir or in one of prepare's temporary folders next to it."""
    r, o = f.resolve(), out.resolve()
    if r.is_relative_to(o):
        return True
    return r.is_relative_to(o.parent) and r.relative_to(o.parent).parts[0].startswith(f".{o.name}.")


def _collect_files(
    inputs: Sequence[PathLike], glob: str, jsonl_field: str | None, out: Path
) -> list[tuple[Path, bool]]:
    """Input files in order, each with whether it is JSONL (an earlier output is never input)."""
    files: list[tuple[Path, bool]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                (f for f in p.rglob(glob) if f.is_file() and not _is_output(f, out)),
                key=lambda f: f.relative_to(p).as_posix(),
            )
            if not found:
                raise DataError(
                    f"{p}: no files matching {glob!r} in this folder or below; use glob="
                )
            paths = found
        elif p.is_file():
            paths = [p]
        else:
            raise DataError(f"{p}: input not found")
        for f in paths:
            files.append((f, jsonl_field is not None or f.suffix.lower() in JSONL_SUFFIXES))
    return files


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
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
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

    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} exists; refusing to overwrite it (pass overwrite=True, CLI: --overwrite)"
            )
        _check_replaceable(out)
    files = _collect_files(inputs, glob, jsonl_field, out)
    tok = resolve_tokenizer(tokenizer)
    vocab_size, eot_id, tok_config = _tokenizer_info(tok)
    dtype = dtype_for_vocab(vocab_size)
    total_bytes = sum(f.stat().st_size for f, _ in files)
    # More processes than units of work would only cost start-up time.
    num_workers = max(1, min(num_workers, -(-total_bytes // chunk_bytes)))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(out.parent, f".{out.name}.partial-")
    sinks = {s: _SplitSink(tmp, s, shard_tokens, vocab_size) for s in ("train", "val")}
    try:
        tok_file: str | None = None
        if hasattr(tok, "save"):
            tok.save(tmp / "tokenizer.json")
            tok_file = "tokenizer.json"
            spec: tuple[str, Any] = ("file", str(tmp / "tokenizer.json"))
        else:
            spec = ("object", tok)
        _tokenize_all(
            files,
            sinks,
            jsonl_field=jsonl_field or "text",
            errors=encoding_errors,
            chunk_bytes=chunk_bytes,
            val_fraction=float(val_fraction),
            seed=seed,
            num_workers=num_workers,
            tok=tok,
            spec=spec,
            eot_id=eot_id,
            dtype=dtype,
            progress=progress,
            total_bytes=total_bytes,
        )
        for sink in sinks.values():
            sink.finish()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scratchgpt_version": __version__,
            "tokenizer": tok_config,
            "tokenizer_file": tok_file,
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
            "documents": {s: k.documents for s, k in sinks.items()},
            "tokens": {s: k.tokens for s, k in sinks.items()},
            "shards": {s: k.shards for s, k in sinks.items()},
        }
        atomic_write_json(tmp / "meta.json", meta)
        _publish(tmp, out, overwrite)
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    notes = []
    if val_fraction > 0 and sinks["val"].documents == 0:
        notes.append(
            f"no document fell into the validation split ({sinks['train'].documents} documents, "
            f"val_fraction={val_fraction}); the split is by whole document, so give more "
            "documents (a folder of files or a JSONL file) or a larger val_fraction"
        )
    return PrepareResult(
        out_dir=out,
        documents=dict(meta["documents"]),
        tokens=dict(meta["tokens"]),
        shards=meta["shards"],
        seconds=time.perf_counter() - started,
        meta=meta,
        notes=notes,
    )


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named folder (mkdtemp's would be private, 0700, not the usual umask)."""
    while True:
        p = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder into place (the old one, if replaced, is deleted after)."""
    old = None
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} appeared while preparing; refusing to overwrite it")
        _check_replaceable(out)
        old = _fresh_dir(out.parent, f".{out.name}.old-")
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tokenize_all(
    files: list[tuple[Path, bool]],
    sinks: dict[str, _SplitSink],
    *,
    jsonl_field: str,
    errors: str,
    chunk_bytes: int,
    val_fraction: float,
    seed: int,
    num_workers: int,
    tok: Any,
    spec: tuple[str, Any],
    eot_id: int,
    dtype: np.dtype,
    progress: bool,
    total_bytes: int,
) -> None:
    from tqdm.auto import tqdm

    rng = random.Random(seed)

    def batches() -> Iterator[tuple[int, list[tuple[str, bool]], list[str], int]]:
        """(bytes, items to encode, split of each item, documents started) per unit of work."""
        items: list[tuple[str, bool]] = []
        splits: list[str] = []
        nbytes = 0
        docs = 0
        for path, is_jsonl in files:
            pieces = (
                _jsonl_pieces(path, jsonl_field, errors)
                if is_jsonl
                else _text_pieces(path, errors, chunk_bytes)
            )
            starting, has_text, split = True, False, "train"
            for size, text, ends in pieces:
                if starting:
                    # One draw per document, in input order: the split never depends on workers.
                    split = "val" if rng.random() < val_fraction else "train"
                    starting, has_text = False, False
                if text and not has_text:
                    has_text = True
                    docs += 1
                    sinks[split].documents += 1
                add_eot = ends and has_text
                if text or add_eot:
                    items.append((text, add_eot))
                    splits.append(split)
                nbytes += size
                if ends:
                    starting = True
                if nbytes >= chunk_bytes:
                    yield nbytes, items, splits, docs
                    items, splits, nbytes, docs = [], [], 0, 0
        if items or nbytes:
            yield nbytes, items, splits, docs

    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="tokenizing",
        disable=not progress,
        file=sys.stderr,
    )
    done_docs = 0

    def consume(nbytes: int, splits: list[str], docs: int, arrays: list[np.ndarray]) -> None:
        nonlocal done_docs
        for split, ids in zip(splits, arrays):
            sinks[split].write(ids)
        done_docs += docs
        bar.update(nbytes)
        tokens = sinks["train"].tokens + sinks["val"].tokens
        bar.set_postfix(docs=f"{done_docs:,}", tokens=f"{tokens:,}", refresh=False)

    try:
        if num_workers == 1:
            _init_worker(("object", tok), eot_id, dtype.str)
            for nbytes, items, splits, docs in batches():
                consume(nbytes, splits, docs, _encode_items(items))
            return
        ctx = multiprocessing.get_context("spawn")  # same on every OS; no forked torch state
        # An executor (unlike multiprocessing.Pool) fails instead of hanging when a worker dies.
        with ProcessPoolExecutor(num_workers, ctx, _init_worker, (spec, eot_id, dtype.str)) as ex:
            # A bounded window of work in flight keeps memory flat however large the corpus is.
            inflight: deque[tuple[int, list[str], int, Future]] = deque()
            try:
                for nbytes, items, splits, docs in batches():
                    inflight.append((nbytes, splits, docs, ex.submit(_encode_items, items)))
                    if len(inflight) >= 2 * num_workers:
                        n, s, d, fut = inflight.popleft()
                        consume(n, s, d, fut.result())
                while inflight:
                    n, s, d, fut = inflight.popleft()
                    consume(n, s, d, fut.result())
            except BrokenProcessPool as e:
                raise DataError(
                    f"a tokenizer worker process died ({e}); if this runs from an interactive "
                    "prompt or stdin, run it from a script file or use num_workers=1"
                ) from None
            finally:
                for *_, fut in inflight:
                    fut.cancel()
    finally:
        _WORKER.clear()
        bar.close()
