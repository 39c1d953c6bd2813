"""The small interface between the training loop and a task (pretraining, classification,
instruction tuning): how to compute the loss of a batch, evaluate, count tokens and show a sample.
Everything else (optimizer, schedule, accumulation, precision, checkpoints, logs) is the loop's.

Also the one next-token loss (``next_token_loss``), the one per-token log-likelihood
(``target_logprobs``: preference tuning, multiple-choice evaluation and the lm-evaluation-harness
adapter score sequences with it) and the one perplexity (``perplexity``, logged under the key
``PERPLEXITY_KEY`` = ``"ppl"``: ``val_ppl``, ``eval_train_ppl``) that pretraining, instruction
tuning and held-out evaluation share.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.instructions import IGNORE_INDEX

PERPLEXITY_KEY = "ppl"
_MAX_LOG_PPL = 700.0  # exp(709) is the largest float64: beyond it perplexity is just "huge"


def next_token_loss(
    logits_or_model: torch.Tensor | nn.Module,
    inputs: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Next-token cross-entropy of ``targets`` (B, T) under the logits (B, T, V), given directly
    or computed as ``model(inputs)``; targets equal to ``ignore_index`` do not count.
    ``reduction``: "mean" over counted targets (the training loss) or "sum"."""
    if isinstance(logits_or_model, torch.Tensor):
        logits = logits_or_model
    else:
        logits = logits_or_model(inputs)  # (B, T, V)
    # Under bf16 autocast the logits are bf16; the softmax over 50k entries wants fp32.
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=ignore_index,
        reduction=reduction,
    )


def target_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Log-probability (fp32) of each target (B, T) under the logits (B, T, V); 0 where the
    target is ``ignore_index``. ``-target_logprobs(...).sum()`` is ``next_token_loss(...,
    reduction="sum")``: the same numbers, kept per token so sequences can be scored one by one."""
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    # Under bf16 autocast the logits are bf16; the softmax over 50k entries wants fp32.
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = torch.gather(logp, -1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * keep


def perplexity(loss: float) -> float:
    """exp of a mean next-token loss (capped so a diverged loss gives a huge number, not an
    overflow)."""
    return math.exp(min(float(loss), _MAX_LOG_PPL))


class Task(ABC):
    """Base class of training tasks. Subclasses implement ``loss``; the rest has defaults.

    A batch is whatever the DataLoader yields (``collate_fn``); the loop moves tensors in it
    (also inside tuples, lists and dicts) to the device before calling these methods.
    """

    name = "task"
    # What one training example is, in messages ("the training data gives 3 texts").
    unit = "window"

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
        return {"loss": mean, PERPLEXITY_KEY: perplexity(mean)}

    def sample(self, model: nn.Module) -> str | None:
        """A short text showing what the model does now (None: no samples)."""
        return None
