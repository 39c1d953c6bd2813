"""Reading a corpus for ``prepare``: input files, documents cut into pieces, units of work.

A text file is one document, cut at line breaks that do not change its tokens so that a large
file can be tokenized in parallel; a JSONL file holds one document per record. Each document is
drawn into the train or validation split once, in input order, so the split never depends on the
number of worker processes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from scratchgpt.errors import Advice, DataError
from scratchgpt.fileio import PathLike

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PRINTABLE = range(0x21, 0x7F)  # visible ASCII: never whitespace, always one byte in UTF-8

# One unit of work: (input bytes it covers, (text, add end-of-text) items, split of each item,
# documents started in it).
WorkUnit = tuple[int, list[tuple[str, bool]], list[str], int]


def _decode(data: bytes, path: Path, offset: int, line: int, errors: str) -> str:
    """Decode one piece of a file; errors name the byte offset and line in the whole file."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        pos = offset + e.start
        ln = line + data.count(b"\n", 0, e.start)
        bad = data[e.start : e.start + 4].hex(" ")
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {pos} (line {ln}; bytes {bad}): {e.reason}; "
            "convert the file to UTF-8",
            Advice(
                "or pass encoding_errors='replace' to substitute invalid bytes",
                "or pass --encoding-errors replace to substitute invalid bytes",
                "--encoding-errors",
                sep=", ",
            ),
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
                        f"{path}: line {lineno}: no field {key!r} (fields: {fields})",
                        Advice(
                            "pass jsonl_field=NAME to name the text field",
                            "pass --jsonl-field NAME to name the text field",
                            "--jsonl-field",
                        ),
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


def collect_files(
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
                    f"{p}: no files matching {glob!r} in this folder or below",
                    Advice(
                        "choose another pattern with glob=",
                        "choose another pattern with --glob",
                        "--glob",
                    ),
                )
            paths = found
        elif p.is_file():
            paths = [p]
        else:
            raise DataError(f"{p}: input not found")
        for f in paths:
            files.append((f, jsonl_field is not None or f.suffix.lower() in JSONL_SUFFIXES))
    return files


def work_units(
    files: list[tuple[Path, bool]],
    *,
    jsonl_field: str,
    errors: str,
    chunk_bytes: int,
    val_fraction: float,
    seed: int,
    documents: dict[str, int],
) -> Iterator[WorkUnit]:
    """The corpus as units of about ``chunk_bytes``; counts documents per split in ``documents``."""
    rng = random.Random(seed)
    items: list[tuple[str, bool]] = []
    splits: list[str] = []
    nbytes = docs = 0
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
                documents[split] += 1
            add_eot = ends and has_text
            if text or add_eot:
                items.append((text, add_eot))
                splits.append(split)
            nbytes += size
            starting = ends
            if nbytes >= chunk_bytes:
                yield nbytes, items, splits, docs
                items, splits, nbytes, docs = [], [], 0, 0
    if items or nbytes:
        yield nbytes, items, splits, docs
