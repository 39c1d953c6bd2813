"""Training checkpoints: folder layout, atomic save, retention, resume discovery, RNG states.

A run folder keeps its checkpoints under ``checkpoints/``::

    checkpoints/
      step-000100/            a complete model folder (scratchgpt.weights.save_checkpoint:
        model.safetensors     model.safetensors, config.json, tokenizer.json, scratchgpt.json)
        config.json           plus the training files:
        tokenizer.json
        scratchgpt.json
        train_config.json     the full resolved run config
        training_state.pt     optimizer, schedule, step, epoch, position in the data order,
                              RNG states (python, numpy, torch CPU, CUDA), best validation loss
      latest                  a text file naming the newest complete folder
      best                    a text file naming the folder with the lowest validation loss

A checkpoint is built in a hidden ``.step-....tmp`` folder (``fileio.atomic_folder``), every file fsynced, then renamed into
place; only then is ``latest`` rewritten (atomically). A crash at any moment therefore leaves
either the old state or the new one, never a folder that looks complete but is not. Resuming
takes the newest folder that loads; a corrupt one is skipped with a warning saying what is
wrong. ``training_state.pt`` holds plain tensors, numbers, strings, lists and dicts only and is
read with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchgpt.config import GPTConfig
from scratchgpt.errors import Advice, CheckpointError, ConfigError, DataError, OutputError
from scratchgpt.fileio import (
    PathLike,
    atomic_folder,
    atomic_write_text,
    output_error_with_note,
    read_json,
    write_json,
)

# Loading weights into the model being resumed is the weights package's (one loader).
from scratchgpt.weights.native import load_weights_into as load_weights_into
from scratchgpt.weights.native import read_manifest, verify_weights, write_checkpoint_files

# The run-folder layout (pointer files, checkpoints/) lives with the weights, so that load_model
# can open a run folder; it is re-exported here for the training code.
from scratchgpt.weights.runs import BEST_FILE as BEST_FILE
from scratchgpt.weights.runs import CHECKPOINTS_DIR as CHECKPOINTS_DIR
from scratchgpt.weights.runs import LATEST_FILE as LATEST_FILE
from scratchgpt.weights.runs import read_pointer
from scratchgpt.weights.runs import resolve_checkpoint as resolve_checkpoint

STATE_FILE = "training_state.pt"
TRAIN_CONFIG_FILE = "train_config.json"
STATE_FORMAT = "scratchgpt-training-state"
STATE_VERSION = 1
REQUIRED_FILES = ("model.safetensors", "config.json", TRAIN_CONFIG_FILE, STATE_FILE)
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to a different model than the one being trained."""


def step_dirname(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(path: PathLike) -> int | None:
    """The step encoded in a checkpoint folder's name, or None if it is not one."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(ckpt_root: PathLike) -> list[Path]:
    """Step folders under ``ckpt_root``, oldest first (temporary folders excluded)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


# ---------------------------------------------------------------------------------------------
# Where a run stands


@dataclass
class TrainState:
    """What the loop carries from step to step and saves in ``training_state.pt`` (with the
    optimizer, schedule and RNG states): enough to continue exactly where a run stopped."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # 0-based epoch of the next micro-batch
    batch_in_epoch: int = 0  # index of the next micro-batch in the epoch's order (all ranks)
    tokens_seen: int = 0
    val_loss: float | None = None  # of the latest evaluation
    best_val_loss: float | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None  # the newest complete checkpoint (not saved in it)
    elapsed_s: float = 0.0  # wall time of the earlier sessions of the run

    def to_dict(self) -> dict[str, Any]:
        """The fields saved in ``training_state.pt`` (checkpoints by folder name)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "best_checkpoint": self.best_checkpoint.name if self.best_checkpoint else None,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], checkpoint: PathLike) -> TrainState:
        """The state saved in ``checkpoint`` (a folder under ``checkpoints/``)."""
        path = Path(checkpoint)
        best = d.get("best_checkpoint")
        return cls(
            step=int(d["step"]),
            epoch=int(d["epoch"]),
            batch_in_epoch=int(d["batch_in_epoch"]),
            tokens_seen=int(d["tokens_seen"]),
            val_loss=d.get("val_loss"),
            best_val_loss=d.get("best_val_loss"),
            best_checkpoint=path.parent / best if best else None,
            last_checkpoint=path,
            elapsed_s=float(d.get("elapsed_s", 0.0)),
        )

    def is_new_best(self) -> bool:
        """Whether the latest validation loss beats every earlier checkpoint's."""
        return self.val_loss is not None and (
            self.best_val_loss is None or self.val_loss < self.best_val_loss
        )

    def saved_now(self) -> bool:
        """Whether the newest checkpoint is of the current step."""
        return (
            self.last_checkpoint is not None and checkpoint_step(self.last_checkpoint) == self.step
        )


# ---------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG the loop can touch, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(
                f"the checkpoint has CUDA RNG states for {len(cuda)} device(s), this machine has "
                f"{torch.cuda.device_count()}; CUDA random numbers will differ from the original run",
                stacklevel=2,
            )
        else:
            torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------------------
# Saving


def remove_temporary(ckpt_root: PathLike) -> None:
    """Delete leftovers of checkpoints whose writing was interrupted."""
    root = Path(ckpt_root)
    if root.is_dir():
        for p in root.iterdir():
            # ".tmp-" is the layout of older versions; fileio.atomic_folder names them ".step-*.tmp".
            temporary = p.name.startswith(".tmp-") or (
                p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name)
            )
            if temporary and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def save_training_checkpoint(
    ckpt_root: PathLike,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    training_state: dict[str, Any],
    run_config: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically (written and renamed once) and point
    ``latest`` at it."""
    root = Path(ckpt_root)
    name = step_dirname(step)
    final = root / name
    previous = read_pointer(root, LATEST_FILE)
    try:
        # A folder already there can only be one that failed to load when the run resumed.
        with atomic_folder(final, overwrite=True) as tmp:
            write_checkpoint_files(tmp, model, tokenizer, metadata=metadata, label=str(final))
            write_json(tmp / TRAIN_CONFIG_FILE, run_config)
            state = {"format": STATE_FORMAT, "version": STATE_VERSION, **training_state}
            # A file object, not a path: a failed write then raises its OSError (ENOSPC...)
            # instead of the zip writer's "unexpected pos".
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save(state, f)
        atomic_write_text(root / LATEST_FILE, name + "\n")
    except OutputError as e:
        if previous is not None and previous.is_dir():
            kept = f"the last checkpoint, {previous}, is intact"
            advice = Advice("then continue from it with resume=True", "then continue with --resume")
            raise output_error_with_note(e, kept, advice) from e
        raise output_error_with_note(e, "no checkpoint of this run was saved yet") from e
    return final


def set_best(ckpt_root: PathLike, checkpoint: PathLike) -> None:
    atomic_write_text(Path(ckpt_root) / BEST_FILE, Path(checkpoint).name + "\n")


def prune_checkpoints(ckpt_root: PathLike, keep_last: int, keep_best: bool) -> list[Path]:
    """Delete step folders other than the newest ``keep_last``, ``latest`` and (optionally)
    ``best``; returns the deleted paths."""
    root = Path(ckpt_root)
    folders = list_checkpoints(root)
    keep = {p.name for p in folders[-keep_last:]} if keep_last > 0 else set()
    latest = read_pointer(root, LATEST_FILE)
    if latest is not None:
        keep.add(latest.name)
    best = read_pointer(root, BEST_FILE)
    if keep_best and best is not None:
        keep.add(best.name)
    removed = []
    for p in folders:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if best is not None and not best.exists():
        (root / BEST_FILE).unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------------------------------------
# Loading


def _config_mismatch(saved: GPTConfig, current: GPTConfig) -> list[str]:
    # The attention implementation changes no weights, so a run may switch it on resume.
    ignore = {"attention"}
    a, b = saved.to_dict(), current.to_dict()
    # A key an older config.json lacks (num_classes, lora) is checked by the weights' shapes.
    return [
        f"{k}: checkpoint {a[k]!r}, this run {b.get(k)!r}"
        for k in a
        if k not in ignore and a[k] != b.get(k)
    ]


def read_training_checkpoint(path: PathLike, model_config: GPTConfig) -> dict[str, Any]:
    """Read and validate a checkpoint without touching any model: weights, state, configs.

    Raises CheckpointMismatchError when it belongs to another model config, CheckpointError
    when it is incomplete or corrupt (each message names the file and the problem).
    """
    from safetensors.torch import load_file

    p = Path(path)
    missing = [name for name in REQUIRED_FILES if not (p / name).is_file()]
    if missing:
        raise CheckpointError(f"{p}: incomplete checkpoint, missing {', '.join(missing)}")
    try:
        saved = GPTConfig.load(p / "config.json")
    except (ConfigError, DataError) as e:
        raise CheckpointError(f"{p / 'config.json'}: unreadable model config: {e}") from None
    diffs = _config_mismatch(saved, model_config)
    if diffs:
        raise CheckpointMismatchError(
            f"{p} was trained with a different model config ({'; '.join(diffs)}); resume with the "
            "same model settings, or start a new run in another folder"
        )
    verify_weights(p, read_manifest(p), p / "model.safetensors")
    try:
        weights = load_file(str(p / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{p / 'model.safetensors'}: corrupt or truncated ({e})") from None
    try:
        state = torch.load(p / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle opcodes, disallowed globals
        raise CheckpointError(
            f"{p / STATE_FILE}: corrupt or truncated ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{p / STATE_FILE}: not a scratchgpt training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{p / STATE_FILE}: training-state version {state.get('version')!r}, this scratchgpt "
            f"reads version {STATE_VERSION}"
        )
    for key in ("step", "epoch", "batch_in_epoch", "tokens_seen", "optimizer", "rng"):
        if key not in state:
            raise CheckpointError(f"{p / STATE_FILE}: field {key!r} is missing")
    try:
        run_config = read_json(p / TRAIN_CONFIG_FILE)
    except DataError as e:
        raise CheckpointError(str(e)) from None
    return {"path": p, "weights": weights, "state": state, "run_config": run_config}


def find_resume_checkpoint(ckpt_root: PathLike, model_config: GPTConfig) -> dict[str, Any] | None:
    """The newest checkpoint under ``ckpt_root`` that loads (``latest`` first, then by step).

    Corrupt or partial folders are skipped with a warning; a folder from another model config
    stops the search with CheckpointMismatchError. None when there is no usable checkpoint.
    """
    root = Path(ckpt_root)
    candidates: list[Path] = []
    latest = read_pointer(root, LATEST_FILE)
    if latest is not None and latest.is_dir():
        candidates.append(latest)
    elif (root / LATEST_FILE).exists():
        warnings.warn(
            f"{root / LATEST_FILE} names no existing checkpoint folder; searching", stacklevel=2
        )
    for p in reversed(list_checkpoints(root)):
        if p not in candidates:
            candidates.append(p)
    # Never prefer an older folder over a newer complete one just because `latest` lagged.
    candidates.sort(key=lambda p: checkpoint_step(p) or 0, reverse=True)
    for p in candidates:
        try:
            return read_training_checkpoint(p, model_config)
        except CheckpointMismatchError:
            raise
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {p.name}: {e}", stacklevel=2)
    return None
