"""Run folders: where a training run keeps its checkpoints, and which one a path names.

A run folder keeps its checkpoints in ``checkpoints/``, with pointer files naming the newest
complete one (``latest``) and the best by validation loss (``best``); they are written by
scratchgpt.training. This is the one place that turns a run folder (or its ``checkpoints``
folder, or a pointer file) into a checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path

from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, read_text

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
BEST_FILE = "best"
POINTER_FILES = (LATEST_FILE, BEST_FILE)


def read_pointer(ckpt_root: Path, name: str) -> Path | None:
    """The checkpoint folder a pointer file (latest/best) in ``ckpt_root`` names, if any."""
    p = ckpt_root / name
    if not p.is_file():
        return None
    target = read_text(p, errors="replace").strip()
    if not target or "/" in target or "\\" in target or target.startswith("."):
        return None
    return ckpt_root / target


def is_run_folder(path: PathLike) -> bool:
    """True for a training run folder or its ``checkpoints`` folder (not a checkpoint itself)."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").is_file():
        return False
    return (p / CHECKPOINTS_DIR).is_dir() or (p / LATEST_FILE).is_file()


def resolve_checkpoint(path: PathLike, which: str = LATEST_FILE) -> Path:
    """A checkpoint folder from a run folder, a ``checkpoints`` folder, a ``latest``/``best``
    pointer file, or a checkpoint folder itself."""
    p = Path(path)
    if p.is_file() and p.name in POINTER_FILES:
        target = read_pointer(p.parent, p.name)
        if target is None:
            raise CheckpointError(f"{p}: does not name a checkpoint folder")
        return target
    if (p / "model.safetensors").is_file():
        return p
    for root in (p / CHECKPOINTS_DIR, p):
        target = read_pointer(root, which)
        if target is not None:
            return target
    raise CheckpointError(
        f"{p}: no checkpoint found (expected a checkpoint folder, or a run folder with "
        f"{CHECKPOINTS_DIR}/{which})"
    )
