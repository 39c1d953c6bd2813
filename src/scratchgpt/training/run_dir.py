"""The run folder: created fresh, continued (``resume``) or replaced (``overwrite``), and locked
for the life of a run so that no second process trains in it or deletes it.

The lock is ``.scratchgpt.lock`` inside the folder (see :mod:`scratchgpt.locking`): the operating
system drops it when its holder exits in any way, so only a live run blocks another. The file
stays after the run (emptied), marking the folder as a scratchgpt run folder.

A folder that holds no checkpoint has nothing to continue (a start that failed, say on a missing
GPU, or a run stopped before its first checkpoint): a new run may start afresh in it without
``--overwrite``, exactly as ``--resume`` would. Reusing it rather than deleting it on a failed
start also covers a start killed outright, and deletes nothing this process did not make.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scratchgpt.fileio import PathLike
from scratchgpt.locking import Lock, acquire
from scratchgpt.training import distributed as dd
from scratchgpt.training.logging import METRICS_FILE
from scratchgpt.training.state import CHECKPOINTS_DIR, list_checkpoints

LOCK_FILE = ".scratchgpt.lock"
# What only a scratchgpt run folder holds; --overwrite deletes nothing else.
RUN_MARKERS = (LOCK_FILE, "run.json", METRICS_FILE, CHECKPOINTS_DIR)
_OTHER_MARKERS = tuple(m for m in RUN_MARKERS if m != LOCK_FILE)


@contextmanager
def hold_run_dir(
    run_dir: PathLike, *, overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Lock the run folder for the ``with`` block and prepare it (see :func:`prepare_run_dir`).

    A folder that a live process holds is refused at once (``InUseError``, naming the process),
    before anything is deleted. Under torchrun rank 0 holds the lock and every rank gets the
    folder (or the error)."""
    dd.init_distributed()
    held: list[Lock] = []
    p = dd.run_on_main(lambda: _lock_and_prepare(Path(run_dir), overwrite, resume, held))
    dd.barrier()
    try:
        yield p
    finally:
        for lock in held:
            lock.release()


def prepare_run_dir(run_dir: PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder. An existing one needs ``resume`` (continue it) or ``overwrite``
    (empty it first; only done for folders that look like runs, or are empty), unless it holds
    no checkpoint (nothing to continue: it is reused).

    The folder's lock is checked (a live run's folder is refused) but not kept: use
    :func:`hold_run_dir` to hold it for a run. Under torchrun this joins the process group;
    rank 0 prepares the folder and every rank gets its result (or its error)."""
    with hold_run_dir(run_dir, overwrite=overwrite, resume=resume) as p:
        return p


def _lock_and_prepare(p: Path, overwrite: bool, resume: bool, held: list[Lock]) -> Path:
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"{p} exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    lock = acquire(p / LOCK_FILE, p)
    try:
        # A lock file this process just made says nothing about what the folder is.
        markers = _OTHER_MARKERS if lock is None or lock.created else RUN_MARKERS
        _prepare(p, overwrite=overwrite, resume=resume, markers=markers)
    except BaseException:
        if lock is not None:
            lock.keep_file = not lock.created  # a refused folder gets no lock file of ours
            lock.release()
        raise
    if lock is not None:
        lock.keep_file = True
        held.append(lock)
    return p


def _prepare(p: Path, *, overwrite: bool, resume: bool, markers: tuple[str, ...]) -> None:
    contents = [c for c in p.iterdir() if c.name != LOCK_FILE]
    if not contents or resume:
        return
    looks_like_run = any((p / m).exists() for m in markers)
    # --overwrite asked for an empty folder: empty it below rather than reuse what is there.
    if looks_like_run and not overwrite and not list_checkpoints(p / CHECKPOINTS_DIR):
        print(
            f"note: {p} holds no checkpoint (an earlier start stopped before its first one); "
            "starting afresh in it",
            file=sys.stderr,
        )
        return
    if not overwrite:
        raise FileExistsError(
            f"{p} already holds a run; pass --resume to continue it or --overwrite to start over"
        )
    if not looks_like_run:
        raise FileExistsError(
            f"{p} is not empty and does not look like a scratchgpt run folder (no run.json, "
            f"{METRICS_FILE} or {CHECKPOINTS_DIR}/); refusing to delete it: choose another --out"
        )
    # Emptied, not removed: the lock file inside stays locked all along.
    for c in contents:
        if c.is_dir() and not c.is_symlink():
            shutil.rmtree(c)
        else:
            c.unlink()
