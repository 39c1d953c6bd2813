"""How a run starts: from the newest usable checkpoint (weights, optimizer, training state, this
rank's RNG state) or fresh (the old run's logs and checkpoints deleted, the RNGs seeded)."""

from __future__ import annotations

import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scratchgpt.errors import ConfigError
from scratchgpt.training import state as st
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.job import SingleProcess
from scratchgpt.training.logging import METRICS_FILE
from scratchgpt.training.sampler import epoch_seed
from scratchgpt.training.state import TrainState


def find_checkpoint(
    model: nn.Module, ckpt_root: Path, notify: Callable[[str], None]
) -> dict[str, Any] | None:
    """The newest usable checkpoint to resume from, its weights loaded into ``model``."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ConfigError("resuming needs a model with a .cfg (GPTConfig)")
    found = st.find_resume_checkpoint(ckpt_root, cfg)
    if found is None:
        notify(f"no complete checkpoint in {ckpt_root}: starting from scratch")
    else:
        st.load_weights_into(model, found["weights"], found["path"] / "model.safetensors")
    return found


def resume_state(
    found: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    job: SingleProcess,
    config: TrainConfig,
    per_epoch: int,
) -> tuple[TrainState, dict[str, Any] | None]:
    """The training state and this rank's RNG state of a checkpoint; its optimizer state loaded."""
    s = found["state"]
    try:
        job.load_optimizer_state(model, optimizer, s["optimizer"])
    except (ValueError, KeyError) as e:
        raise st.CheckpointError(
            f"{found['path'] / st.STATE_FILE}: optimizer state does not fit this model ({e})"
        ) from None
    state = TrainState.from_dict(s, found["path"])
    rng_state = s["rng"]
    if job.rank > 0:
        # Each rank's own dropout stream; a new rank (the world grew) gets a fresh one.
        per_rank = s.get("rng_ranks") or []
        rng_state = per_rank[job.rank] if job.rank < len(per_rank) else None
        if rng_state is None:
            torch.manual_seed(epoch_seed(config.seed + job.rank, state.step))
    saved_seed = found["run_config"].get("train", {}).get("seed")
    if saved_seed is not None and saved_seed != config.seed:
        warnings.warn(
            f"resuming a run trained with seed {saved_seed} under seed {config.seed}: the data "
            "order of later epochs follows the new seed",
            stacklevel=3,
        )
    kw = config.grad_accum_steps * job.world_size
    if state.batch_in_epoch % kw:
        raise st.CheckpointError(
            f"{found['path']}: saved at micro-batch {state.batch_in_epoch} of an epoch, which is "
            f"not a multiple of grad_accum_steps={config.grad_accum_steps}"
            + (f" x {job.world_size} ranks" if job.enabled else "")
            + "; resume with the original global batch (ranks x batch_size x grad_accum_steps)"
        )
    if state.batch_in_epoch >= per_epoch * kw:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    return state, rng_state


def fresh_start(run_dir: Path, ckpt_root: Path, seed: int, job: SingleProcess) -> None:
    """Delete an earlier run's logs and checkpoints (rank 0) and seed this rank's RNGs."""
    if job.is_main:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        for p in st.list_checkpoints(ckpt_root):
            shutil.rmtree(p)
        for name in (st.LATEST_FILE, st.BEST_FILE):
            (ckpt_root / name).unlink(missing_ok=True)
    # Rank r > 0 gets its own dropout stream; rank 0's is the single-process one.
    torch.manual_seed(seed + job.rank)
    random.seed(seed + job.rank)
    np.random.seed((seed + job.rank) % 2**32)
