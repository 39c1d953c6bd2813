"""Small file helpers used everywhere: strict UTF-8 reading and atomic writes.

Outputs are written to a temporary file in the same folder and renamed into place, so a crash
never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scratchgpt.errors import DataError

PathLike = str | os.PathLike


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def decode_utf8(data: bytes, source: str = "<bytes>", errors: str = "strict") -> str:
    """Decode UTF-8, naming the byte offset (and line) of the first invalid byte on failure."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line, col = _line_and_column(data, e.start)
        bad = data[e.start : e.start + 4].hex(" ")
        raise DataError(
            f"{source}: not valid UTF-8 at byte offset {e.start} (line {line}, column {col}; "
            f"bytes {bad}): {e.reason}. Convert the file to UTF-8, or pass errors='replace' "
            "(CLI: --encoding-errors replace) to substitute invalid bytes."
        ) from None


def read_text(path: PathLike, errors: str = "strict") -> str:
    """Read a UTF-8 text file; a clear DataError if it is missing or not UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder, expected a text file") from None
    # Text mode would turn CRLF into LF; tokenizers must see the bytes as they are.
    return decode_utf8(data, str(p), errors)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write `data` to `path` via a temporary file and an atomic rename."""
    p = Path(path)
    if not overwrite and p.exists():
        raise FileExistsError(
            f"{p} exists; refusing to overwrite it (use --overwrite to replace it)"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_text(path: PathLike, text: str, overwrite: bool = True) -> Path:
    """Write UTF-8 text atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: PathLike, obj: Any, overwrite: bool = True) -> Path:
    """Write JSON (indented, UTF-8, trailing newline) atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


def read_json(path: PathLike) -> Any:
    """Read a JSON file; errors name the file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
