"""Small file helpers used everywhere: strict UTF-8 reading and atomic writes.

Outputs are written to a temporary file in the same folder and renamed into place, so a crash
never leaves a half-written file where a good one was. A full disk, a read-only file system or a
missing permission ends in one :class:`~scratchgpt.errors.OutputError` that names the output and
the cause, after the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scratchgpt.errors import (
    OVERWRITE_ADVICE,
    Advice,
    DataError,
    OutputError,
    OutputExistsError,
    ScratchGPTError,
)

PathLike = str | os.PathLike


def cache_root() -> Path:
    """The project's cache folder: ``$SCRATCHGPT_CACHE`` if set, else ``~/.cache/scratchgpt``
    (downloaded data and models, compiled kernels)."""
    env = os.environ.get("SCRATCHGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scratchgpt"


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


def default_permissions(path: PathLike) -> None:
    """Give a file the mode a plain ``open(path, "w")`` would (0666 less the umask): libraries
    that write through their own temporary file (safetensors) leave it 0600."""
    os.chmod(path, 0o666 & ~_umask())


def fsync_path(path: PathLike) -> None:
    """Flush a file or folder entry to disk (best effort: some filesystems refuse to flush a
    folder), except that a full disk, which some filesystems report only here, raises."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
    finally:
        os.close(fd)


def _flush_entry(folder: Path) -> None:
    """Flush a rename that has already happened: the output is complete, so a failure here
    must not report it as unwritten."""
    with contextlib.suppress(OSError):
        fsync_path(folder)


def fsync_tree(root: PathLike) -> None:
    """Flush every file and folder under ``root`` (and ``root`` itself) to disk."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


# ---------------------------------------------------------------------------------------------
# Full disks, read-only file systems, missing permissions

# What the user is told for each errno that means "this output cannot be written here".
_DISK_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the file-size limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_DISK_ADVICE = {
    errno.ENOSPC: "free up space or write elsewhere, then try again",
    errno.EDQUOT: "free up space or write elsewhere, then try again",
    errno.EFBIG: "write elsewhere or raise the file-size limit, then try again",
    errno.EROFS: "write to a writable location instead",
    errno.EACCES: "write somewhere you may write to, or fix the folder's permissions",
    errno.EPERM: "write somewhere you may write to, or fix the folder's permissions",
}
# torch.save to a path reports a failed write only as the C++ zip writer's complaint.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def _probe_folder(folder: Path) -> int | None:
    """Why a write into ``folder`` just failed, from the file system's own numbers."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    # Root may use the blocks reserved for it; everyone else sees only f_bavail.
    free = fs.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else fs.f_bavail
    if free * fs.f_frsize < 1 << 20:
        return errno.ENOSPC
    return None


def disk_errno(exc: BaseException, folder: PathLike | None = None) -> int | None:
    """The errno of a failed write (full disk, read-only, no permission), else None.

    Understands OSError, the messages of safetensors ("... (os error 28)") and torch's zip
    writer, whose failures name no cause: then the free space of ``folder`` tells.
    """
    if isinstance(exc, ScratchGPTError) and not isinstance(exc, OutputError):
        return None  # already explained (an unreadable input, say)
    seen: BaseException | None = exc
    for _ in range(4):  # torch may raise a RuntimeError while handling the OSError
        if seen is None:
            break
        if isinstance(seen, OutputError):
            return seen.errno
        if isinstance(seen, OSError) and seen.errno in _DISK_CAUSES:
            return seen.errno
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    if isinstance(exc, OSError) and exc.errno is not None:
        return None  # another errno: not about space or permission
    text = str(exc)
    found = re.search(r"os error (\d+)", text)
    if found and int(found.group(1)) in _DISK_CAUSES:
        return int(found.group(1))
    for code in _DISK_CAUSES:
        if os.strerror(code) in text:
            return code
    if folder is not None and any(m in text for m in _TORCH_WRITE_FAILED):
        return _probe_folder(Path(folder))
    return None


def _filename(exc: BaseException) -> str | None:
    name = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else None


def output_error(
    exc: BaseException,
    path: PathLike | None = None,
    *,
    verb: str = "write",
    note: str | None = None,
    scratch: PathLike | None = None,
) -> OutputError | None:
    """The one-line :class:`OutputError` for ``exc`` if it means ``path`` cannot be written
    (full disk, quota, read-only, no permission), else None.

    ``note`` says what survived (default when ``path`` is given: nothing was left behind);
    ``scratch`` is the folder the failed write went to, whose free space is checked
    when the error itself names no cause.
    """
    if isinstance(exc, OutputError) and path is None:
        return exc
    target = Path(path) if path is not None else None
    named = _filename(exc)
    if target is None:
        target = Path(named) if named else None
    code = disk_errno(exc, scratch if scratch is not None else (target and target.parent))
    if code is None:
        return None
    if code in (errno.EACCES, errno.EPERM) and named and target is not None:
        # A permission error on some other file (an input, say) is not about this output.
        inside = (target, target.parent, Path(scratch) if scratch else target)
        if not any(Path(named) == p or p in Path(named).parents for p in inside):
            return None
    where = f" {target}" if target is not None else " the output"
    if note is None:  # a caller that names no output cannot vouch for its cleanup
        note = "nothing was left behind" if path is not None else ""
    tail = f"; {note}" if note else ""
    message = f"cannot {verb}{where}: {_DISK_CAUSES[code]}{tail}; {_DISK_ADVICE[code]}"
    return OutputError(message, path=None if target is None else str(target), errno=code)


def output_error_with_note(
    err: OutputError, note: str, advice: Advice | None = None
) -> OutputError:
    """``err`` again, saying ``note`` about what survived instead of the writer's default (and
    ``advice`` on what to do next, in its Python and command-line spellings)."""
    if err.errno not in _DISK_CAUSES or err.path is None:
        return err
    code = err.errno
    message = f"cannot write {err.path}: {_DISK_CAUSES[code]}; {note}; {_DISK_ADVICE[code]}"
    return OutputError(message, advice, path=err.path, errno=code)


@contextlib.contextmanager
def output_errors(
    path: PathLike, *, verb: str = "write", note: str | None = None
) -> Iterator[None]:
    """Turn a full disk, read-only file system or missing permission inside the block into one
    :class:`OutputError` about ``path``; every other error passes unchanged."""
    try:
        yield
    except Exception as e:
        err = output_error(e, path, verb=verb, note=note)
        if err is None or err is e:
            raise
        raise err from e


def make_folder(path: PathLike) -> Path:
    """``mkdir -p`` whose failure on a full or read-only disk is one OutputError naming the
    folder it could not create."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err = output_error(e, _filename(e) or p, verb="create")
        if err is None:
            raise
        raise err from e
    return p


def check_writable(path: PathLike) -> Path:
    """Fail early, before long work, if a file cannot be created at ``path``: creates its
    folder and a probe file there, then deletes the probe. Raises OutputError."""
    dest = Path(path)
    make_folder(dest.parent)
    probe = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        with output_errors(dest):
            probe.open("xb").close()
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return dest


def _failed_write(
    exc: BaseException, dest: Path, scratch: Path, existed: bool
) -> OutputError | None:
    """The OutputError for ``dest`` when a write into ``scratch`` failed for lack of space,
    a read-only disk or permission (also one raised deeper, about a file inside ``scratch``)."""
    if not isinstance(exc, Exception):
        return None
    if isinstance(exc, OutputError) and exc.path is not None:
        inner = Path(exc.path)
        if inner != dest and scratch not in inner.parents and inner != scratch:
            return None  # about some other output: leave it as it is
    note = f"{dest} was left as it was" if existed else "nothing was left behind"
    return output_error(exc, dest, note=note, scratch=scratch)


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
    make_folder(dest.parent)
    existed = dest.exists()
    # Not mkstemp: its files are private (0600); outputs get the mode a plain open() would.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        if tmp.exists():
            default_permissions(tmp)
            fsync_path(tmp)
            _refuse_existing(dest, overwrite)
            os.replace(tmp, dest)
            _flush_entry(dest.parent)
    except BaseException as e:
        # Checked before the cleanup: the half-written file is what shows a full disk.
        err = _failed_write(e, dest, tmp, existed)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if err is None or err is e:
            raise
        raise err from e


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
    make_folder(dest.parent)
    existed = dest.exists()
    with output_errors(dest):
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
        _flush_entry(dest.parent)
    except BaseException as e:
        err = _failed_write(e, dest, tmp, existed)
        shutil.rmtree(tmp, ignore_errors=True)
        if err is None or err is e:
            raise
        raise err from e


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
