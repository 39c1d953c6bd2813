"""Held-out loss and perplexity of a model over a dataset (every token counted once)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import IGNORE_INDEX
from scratchgpt.errors import DataError
from scratchgpt.training.task import PERPLEXITY_KEY, perplexity, target_logprobs


class LossReport(dict):
    """``evaluate_loss``'s result: a dict whose old key ``"perplexity"`` still reads (with a
    DeprecationWarning) as the one perplexity key, ``"ppl"``, for one release."""

    def __missing__(self, key: str) -> Any:
        if key == "perplexity":
            warnings.warn(
                f"evaluate_loss(...)['perplexity'] is now ['{PERPLEXITY_KEY}'] (the key the "
                "training logs use); the old key will be removed in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return self[PERPLEXITY_KEY]
        raise KeyError(key)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    dataset: Sequence[Any],
    collate_fn: Callable[[list[Any]], Any] | None = None,
    *,
    batch_size: int = 8,
    max_batches: int | None = None,
    progress: bool | None = None,
) -> dict[str, float]:
    """Token-weighted mean next-token cross-entropy (targets of -100 ignored) and perplexity
    (key ``"ppl"``, as in the training logs) over ``dataset`` (items collate to
    ``(inputs, targets)``), in eval mode. ``progress``: a bar on a terminal, a line every few
    seconds elsewhere (None), or nothing (False)."""
    from torch.utils.data import default_collate

    from scratchgpt.progress import progress as progress_bar

    collate = collate_fn or default_collate
    n = len(dataset)
    if n == 0:
        raise DataError("the evaluation data set is empty")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens, batches = 0.0, 0, 0
    n_batches = -(-n // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    bar = progress_bar(total=n_batches, desc="evaluating loss", unit="batches", enabled=progress)
    try:
        for start in range(0, n, batch_size):
            if max_batches is not None and batches >= max_batches:
                break
            inputs, targets = collate(
                [dataset[i] for i in range(start, min(n, start + batch_size))]
            )
            inputs, targets = inputs.to(device), targets.to(device)
            # The one per-token log-likelihood (evaluation.loglik): loss = -sum of log p.
            total -= float(target_logprobs(model(inputs), targets, IGNORE_INDEX).sum())
            tokens += int((targets != IGNORE_INDEX).sum())
            batches += 1
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    if tokens == 0:
        raise DataError("the evaluation data has no target tokens")
    mean = total / tokens
    return LossReport(
        loss=mean,
        **{PERPLEXITY_KEY: perplexity(mean)},
        tokens=float(tokens),
        batches=float(batches),
    )
