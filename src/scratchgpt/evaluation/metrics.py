"""Held-out loss and perplexity of a model over a dataset (every token counted once)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.instructions import IGNORE_INDEX
from scratchgpt.errors import DataError


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    dataset: Sequence[Any],
    collate_fn: Callable[[list[Any]], Any] | None = None,
    *,
    batch_size: int = 8,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Token-weighted mean next-token cross-entropy (targets of -100 ignored) and perplexity
    over ``dataset`` (items collate to ``(inputs, targets)``), in eval mode."""
    from torch.utils.data import default_collate

    collate = collate_fn or default_collate
    n = len(dataset)
    if n == 0:
        raise DataError("the evaluation data set is empty")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens, batches = 0.0, 0, 0
    try:
        for start in range(0, n, batch_size):
            if max_batches is not None and batches >= max_batches:
                break
            inputs, targets = collate(
                [dataset[i] for i in range(start, min(n, start + batch_size))]
            )
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)  # (B, T, V)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(),
                targets.flatten(),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(loss)
            tokens += int((targets != IGNORE_INDEX).sum())
            batches += 1
    finally:
        model.train(was_training)
    if tokens == 0:
        raise DataError("the evaluation data has no target tokens")
    mean = total / tokens
    return {
        "loss": mean,
        "perplexity": math.exp(min(mean, 700.0)),
        "tokens": float(tokens),
        "batches": float(batches),
    }
