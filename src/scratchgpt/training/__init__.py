"""The one training engine: loop, schedules, checkpoints with exact resume, logs and plots.

Names are imported lazily so that the CLI can read the config dataclasses (to build its flags)
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainConfig": "config",
    "DataConfig": "config",
    "ModelSpec": "config",
    "RunConfig": "config",
    "list_presets": "config",
    "LRSchedule": "schedules",
    "Task": "task",
    "train": "loop",
    "TrainResult": "loop",
    "TrainingDivergedError": "loop",
    "TrainState": "state",
    "next_token_loss": "task",
    "perplexity": "task",
    "prepare_run_dir": "run_dir",
    "hold_run_dir": "run_dir",
    "build_optimizer": "setup",
    "resolve_checkpoint": "state",
    "plot_run": "plots",
}

__all__ = [
    "DataConfig",
    "LRSchedule",
    "ModelSpec",
    "RunConfig",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "build_optimizer",
    "hold_run_dir",
    "list_presets",
    "next_token_loss",
    "perplexity",
    "plot_run",
    "prepare_run_dir",
    "resolve_checkpoint",
    "train",
]

if TYPE_CHECKING:
    from scratchgpt.training.config import (
        DataConfig,
        ModelSpec,
        RunConfig,
        TrainConfig,
        list_presets,
    )
    from scratchgpt.training.loop import TrainingDivergedError, TrainResult, train
    from scratchgpt.training.plots import plot_run
    from scratchgpt.training.run_dir import hold_run_dir, prepare_run_dir
    from scratchgpt.training.schedules import LRSchedule
    from scratchgpt.training.setup import build_optimizer
    from scratchgpt.training.state import TrainState, resolve_checkpoint
    from scratchgpt.training.task import Task, next_token_loss, perplexity


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scratchgpt.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"scratchgpt.training.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
