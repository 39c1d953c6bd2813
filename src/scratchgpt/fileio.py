"""Small file helpers used everywhere: strict UTF-8 reading and atomic writes.

Outputs are written to a temporary file in the same folder and renamed into place, so a crash
never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scratchgpt.errors import OVERWRITE_ADVICE, Advice, DataError, OutputExistsError

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
            f"bytes {bad}): {e.reason}; convert the file to UTF-8",
            ENCODING_ADVICE,
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


def fsync_path(path: PathLike) -> None:
    """Flush a file or folder entry to disk (folders: best effort, some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: PathLike) -> None:
    """Flush every file and folder under ``root`` (and ``root`` itself) to disk."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


def _refuse_existing(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} exists; refusing to overwrite it", OVERWRITE_ADVICE)


OVERWRITE_HINT = OVERWRITE_ADVICE.python  # the old constant, kept for importers
# Invalid UTF-8: read_text's argument in Python, the flag of the commands that have one.
ENCODING_ADVICE = Advice(
    "or pass errors='replace' to substitute invalid bytes",
    "or pass --encoding-errors replace to substitute invalid bytes",
    "--encoding-errors",
    sep=", ",
)


@contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write a file to; on success it is flushed and
    renamed onto ``path``, on any error deleted, so ``path`` never holds half a file.

    This and :func:`atomic_folder` are the project's only atomic writes; every output goes
    through one of them.
    """
    dest = Path(path)
    _refuse_existing(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600); outputs get the mode a plain open() would.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
            fsync_path(tmp)
            _refuse_existing(dest, overwrite)
            os.replace(tmp, dest)
            fsync_path(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``path``.

    An existing ``path`` is refused unless ``overwrite``; with it, the old folder is removed only
    after the new one is complete and renamed into place. Files written inside need no atomic
    write of their own: the whole folder is flushed once and renamed once. On any error the
    temporary folder is deleted and ``path`` is left as it was.
    """
    dest = Path(path)
    _refuse_existing(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(dest.parent, f".{dest.name}.", ".tmp")
    try:
        yield tmp
        fsync_tree(tmp)
        # Checked again: another process may have created it while we were writing.
        _refuse_existing(dest, overwrite)
        if dest.exists() or dest.is_symlink():
            old = dest.with_name(f".{dest.name}.old-{secrets.token_hex(4)}")
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(old, dest)
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.rename(tmp, dest)
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fresh_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new uniquely named folder with the usual umask mode (mkdtemp's would be 0700)."""
    while True:
        p = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def atomic_write_bytes(path: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write `data` to `path` via a temporary file and an atomic rename."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, overwrite: bool = True) -> Path:
    """Write UTF-8 text atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def json_text(obj: Any) -> str:
    """The project's JSON file layout: indented, UTF-8, trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: PathLike, obj: Any, overwrite: bool = True) -> Path:
    """Write JSON (indented, UTF-8, trailing newline) atomically."""
    return atomic_write_text(path, json_text(obj), overwrite=overwrite)


def write_json(path: PathLike, obj: Any) -> Path:
    """Write JSON plainly, for files inside a folder that :func:`atomic_folder` publishes."""
    p = Path(path)
    p.write_bytes(json_text(obj).encode("utf-8"))
    return p


def read_json(path: PathLike) -> Any:
    """Read a JSON file; errors name the file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
