"""The run folder: created fresh, continued (``resume``) or replaced (``overwrite``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from scratchgpt.fileio import PathLike
from scratchgpt.training import distributed as dd
from scratchgpt.training.logging import METRICS_FILE
from scratchgpt.training.state import CHECKPOINTS_DIR


def prepare_run_dir(run_dir: PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder. An existing one needs ``resume`` (continue it) or ``overwrite``
    (delete it first; only done for folders that look like runs, or are empty).

    Under torchrun this joins the process group; rank 0 prepares the folder and every rank
    gets its result (or its error)."""
    dd.init_distributed()
    p = dd.run_on_main(lambda: _prepare(run_dir, overwrite=overwrite, resume=resume))
    dd.barrier()
    return p


def _prepare(run_dir: PathLike, *, overwrite: bool, resume: bool) -> Path:
    p = Path(run_dir)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"{p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        if resume:
            return p
        if not overwrite:
            raise FileExistsError(
                f"{p} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        markers = ("run.json", METRICS_FILE, CHECKPOINTS_DIR)
        if not any((p / m).exists() for m in markers):
            raise FileExistsError(
                f"{p} is not empty and does not look like a scratchgpt run folder (no run.json, "
                f"{METRICS_FILE} or {CHECKPOINTS_DIR}/); refusing to delete it: choose another --out"
            )
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)
    return p
