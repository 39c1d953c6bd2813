"""Exclusive locks on run folders and outputs, so two processes never write the same one.

A lock is an OS advisory lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a small lock
file that also records its holder (pid, host, command line, start time) for the error message a
second process gets. The operating system drops the lock when its holder exits in any way,
SIGKILL included, so a lock file left behind by a dead process blocks nobody: only a live holder
does. ``fcntl`` directly rather than the ``filelock`` library: filelock truncates the lock file
when it opens it, so it cannot keep a record of the holder in it.

A lock file that is removed on release is removed while still locked, and every taker checks
after locking that the file it locked is still the one at the path; so a process that opened the
old file just before it was removed never believes it holds the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scratchgpt.errors import ScratchGPTError

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    # One byte far past the holder record, which stays readable by the processes it turns away.
    _WINDOWS_BYTE = 1 << 30

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # held elsewhere (EACCES / EDEADLOCK)
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        # Explicit, not just close(): a forked child (a data-loader worker) shares the lock.
        fcntl.flock(fd, fcntl.LOCK_UN)


class InUseError(ScratchGPTError):
    """Another live process holds the lock on a run folder or output."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file records it."""

    pid: int
    host: str
    command: str
    started: float  # seconds since the epoch

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), command_line(), time.time())

    def describe(self) -> str:
        """'process 1234 (scratchgpt pretrain ..., started 03:12:05)'."""
        when = time.localtime(self.started)
        same_day = time.strftime("%Y-%m-%d", when) == time.strftime("%Y-%m-%d")
        since = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", when)
        where = "" if self.host == socket.gethostname() else f" on host {self.host}"
        return f"process {self.pid}{where} ({self.command}, started {since})"


def command_line(limit: int = 120) -> str:
    """This process's command line, shortened: 'scratchgpt pretrain --out runs/demo ...'."""
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0])
    if "scratchgpt" in first.parts:  # python -m scratchgpt(.cli)
        name = "scratchgpt"
    elif first.name in ("__main__.py", "__init__.py"):
        name = first.parent.name
    else:
        name = first.name
    text = shlex.join([name, *argv[1:]])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_holder(lock_file: Path) -> Holder | None:
    """The holder recorded in ``lock_file`` (None when absent, empty or unreadable)."""
    try:
        d = json.loads(lock_file.read_bytes())
        return Holder(int(d["pid"]), str(d["host"]), str(d["command"]), float(d["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Lock:
    """A held lock; :meth:`release` (or the holder's exit) gives it up."""

    def __init__(self, lock_file: Path, fd: int, *, created: bool) -> None:
        self.lock_file = lock_file
        self.created = created  # this process made the lock file
        self.keep_file = False  # on release: empty the file (True) or remove it (False)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.keep_file:
                os.ftruncate(fd, 0)
            else:
                self.lock_file.unlink(missing_ok=True)
        except OSError:
            pass  # best effort: a stale file blocks nobody
        finally:
            try:
                _unlock(fd)
            finally:
                os.close(fd)


def _open(lock_file: Path) -> tuple[int, bool]:
    """(descriptor, created) for ``lock_file``, made if missing."""
    while True:
        try:
            return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            pass
        try:
            return os.open(lock_file, os.O_RDWR), False
        except FileNotFoundError:
            continue  # removed by its releasing holder in between: make it


def _same_file(fd: int, lock_file: Path) -> bool:
    try:
        on_disk = os.stat(lock_file)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def acquire(lock_file: Path, what: Path | str) -> Lock | None:
    """Lock ``lock_file`` for this process and record it as the holder.

    Raises InUseError, naming ``what`` and the holder, when a live process holds it. Returns
    None where the lock file cannot be made (a read-only folder: the write will fail and say
    so) or the filesystem cannot lock (with a warning): the work goes on unprotected rather
    than not at all.
    """
    lock_file = Path(lock_file)
    while True:
        try:
            fd, created = _open(lock_file)
        except OSError:
            # A folder that cannot be written to (read-only, no permission): nothing can clobber
            # it, and the command's own write reports the problem.
            return None
        try:
            locked = _try_lock(fd)
        except OSError as e:  # e.g. ENOLCK on some network filesystems
            os.close(fd)
            _cannot_lock(lock_file, e)
            return None
        if not locked:
            os.close(fd)
            raise InUseError(_busy_message(lock_file, what))
        if _same_file(fd, lock_file):
            break
        _unlock(fd)  # we locked a file its holder removed on release: take the new one
        os.close(fd)
    record = json.dumps(dataclasses.asdict(Holder.me())).encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, record)
    return Lock(lock_file, fd, created=created)


def _busy_message(lock_file: Path, what: Path | str) -> str:
    holder = read_holder(lock_file)
    who = holder.describe() if holder else f"another process (lock file {lock_file})"
    return f"{what} is in use by {who}; wait for it to finish or stop it first"


def _cannot_lock(lock_file: Path, e: OSError) -> None:
    warnings.warn(
        f"could not lock {lock_file} ({e.strerror or e}); going on without protection against "
        "a second process writing the same place",
        stacklevel=3,
    )


@contextlib.contextmanager
def hold_lock(lock_file: Path, what: Path | str) -> Iterator[Lock | None]:
    """Hold the lock on ``lock_file`` for the ``with`` block; the file is removed afterwards."""
    lock = acquire(lock_file, what)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def output_lock_file(path: Path | str) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    p = Path(path)
    if not p.name:
        p = p.resolve()
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def hold_output(path: Path | str | None) -> Iterator[None]:
    """Hold the lock on output ``path`` (a file or folder a command writes) for the ``with``
    block, so that a second writer stops at once with an error naming this process. ``None``
    (output to the terminal) locks nothing."""
    if path is None:
        yield
        return
    lock_file = output_lock_file(path)
    # On failure acquire() locks nothing; the write itself reports why the folder is unusable.
    with contextlib.suppress(OSError):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(lock_file, path):
        yield
