"""The classifier's forward pass and its task on the shared loop (the book's section 6.5-6.7).

A GPT becomes a classifier by replacing its output head with ``Linear(emb_dim, num_classes)``
and reading the logits at the last real (non-padding) token of each text: under causal attention
that is the one position that has seen the whole text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.errors import DataError
from scratchgpt.model.surgery import set_dropout  # noqa: F401  (re-exported)
from scratchgpt.tasks.classify.config import TASK_NAME
from scratchgpt.training.task import Task


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) position of the last 1 in each row of a (B, T) mask."""
    t = attention_mask.shape[1]
    return t - 1 - attention_mask.flip(1).to(torch.int64).argmax(1)


def classifier_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, num_classes) logits at the last real token of each row.

    Without a mask the last position is used (the book). Columns that are padding in every row
    are dropped first (the same result, computed on fewer tokens). With padding before a real
    token (left padding) the padding is masked out of attention and positions count real tokens
    only, so a text's logits do not depend on which side it was padded.
    """
    if attention_mask is None:
        return model(input_ids)[:, -1, :]
    mask = attention_mask.bool()
    if not bool(mask.any(1).all()):
        raise DataError("a row of the batch has no real tokens (empty text)")
    cols = mask.any(0).nonzero().flatten()
    first, last = int(cols[0]), int(cols[-1]) + 1
    ids, mask = input_ids[:, first:last], mask[:, first:last]
    idx = last_token_index(mask)
    # With right padding only, causal attention never lets a real token see a pad token; a pad
    # before a real token (a 0 -> 1 step in the mask) needs masking and shifted positions.
    left_padded = bool((mask.int().diff(dim=1) > 0).any())
    if left_padded:
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        out = model(ids, attention_mask=mask.long(), position_ids=positions)
    else:
        out = model(ids)
    return out[torch.arange(ids.shape[0], device=ids.device), idx]


class ClassifyTask(Task):
    """Cross-entropy on the last real token's logits; batches are (ids, mask, labels)."""

    name = TASK_NAME
    unit = "text"

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        ids, mask, labels = batch
        return F.cross_entropy(classifier_logits(model, ids, mask).float(), labels)

    def count_tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Mean loss and accuracy over the batches."""
        losses, correct, total = [], 0, 0
        for ids, mask, labels in batches:
            logits = classifier_logits(model, ids, mask).float()
            losses.append(float(F.cross_entropy(logits, labels)))
            correct += int((logits.argmax(-1) == labels).sum())
            total += int(labels.numel())
        if not losses:
            return {}
        return {"loss": sum(losses) / len(losses), "accuracy": correct / total}
