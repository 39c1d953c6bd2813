"""The small interface between the training loop and a task (pretraining, classification,
instruction tuning): how to compute the loss of a batch, evaluate, count tokens and show a sample.
Everything else (optimizer, schedule, accumulation, precision, checkpoints, logs) is the loop's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class Task(ABC):
    """Base class of training tasks. Subclasses implement ``loss``; the rest has defaults.

    A batch is whatever the DataLoader yields (``collate_fn``); the loop moves tensors in it
    (also inside tuples, lists and dicts) to the device before calling these methods.
    """

    name = "task"

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss of the batch (a scalar tensor the loop backpropagates)."""

    def count_tokens(self, batch: Any) -> int:
        """Tokens the batch trains on, for ``tokens_seen``, throughput and ``max_tokens``."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.numel())

    def sequence_length(self, batch: Any) -> int:
        """Length of the batch's sequences (for the FLOP count of the MFU estimate)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[-1])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Metrics over some batches; the loop calls it in eval mode. Default: mean loss and its
        perplexity (exp of the loss)."""
        losses = [float(self.loss(model, b)) for b in batches]
        if not losses:
            return {}
        mean = sum(losses) / len(losses)
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0))}

    def sample(self, model: nn.Module) -> str | None:
        """A short text showing what the model does now (None: no samples)."""
        return None
