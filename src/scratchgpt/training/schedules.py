"""Learning-rate schedules (the book's appendix D): linear warm-up, then constant or cosine decay.

A schedule is a pure function of the optimizer step, so resuming needs nothing but the step
number: no scheduler object whose hidden state could drift from the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scratchgpt.errors import ConfigError


@dataclass(frozen=True)
class LRSchedule:
    """``lr(step)`` for 0-based optimizer steps.

    Steps ``0 .. warmup_steps - 1`` rise linearly from ``warmup_init_lr`` by
    ``(peak_lr - warmup_init_lr) / warmup_steps`` per step (appendix D's ``lr_increment``). After
    that, "constant" stays at ``peak_lr``; "cosine" follows
    ``min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress))`` with
    ``progress = (step - warmup_steps) / (total_steps - warmup_steps)``, reaching ``min_lr`` at
    ``total_steps`` and staying there.
    """

    peak_lr: float
    kind: str = "constant"
    warmup_steps: int = 0
    warmup_init_lr: float = 0.0
    min_lr: float = 0.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "cosine"):
            raise ConfigError(f"unknown schedule {self.kind!r}; choose 'constant' or 'cosine'")
        if self.kind == "cosine" and self.total_steps is None:
            raise ConfigError(
                "the cosine schedule needs the total number of steps: set max_steps, max_epochs "
                "or max_tokens"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            increment = (self.peak_lr - self.warmup_init_lr) / self.warmup_steps
            return self.warmup_init_lr + step * increment
        if self.kind == "constant":
            return self.peak_lr
        assert self.total_steps is not None
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span > 0 else 1.0
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    def state_dict(self) -> dict[str, float | int | str | None]:
        """The schedule's parameters (saved in the training state for the record)."""
        return {
            "kind": self.kind,
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "warmup_init_lr": self.warmup_init_lr,
            "min_lr": self.min_lr,
            "total_steps": self.total_steps,
        }
