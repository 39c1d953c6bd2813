"""Checking and preparing what generation is given: the model's limits and the prompt ids.

A prompt is a (B, T) tensor (optionally with a left-padding ``attention_mask``), or a list of
token-id lists of different lengths, which are left-padded here: padding is never attended to and
each row continues as if it were alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scratchgpt.errors import ConfigError, DataError
from scratchgpt.generation.sampling import is_int

TokenIds = torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | Sequence[torch.Tensor]


def model_limits(model: nn.Module, context_size: int | None) -> tuple[int, int | None]:
    """(context window, vocab size or None) for ``model``."""
    cfg = getattr(model, "cfg", None)
    max_ctx = getattr(cfg, "context_length", None)
    if context_size is None:
        if max_ctx is None:
            raise ConfigError("context_size is required for a model without a .cfg.context_length")
        context_size = max_ctx
    if not is_int(context_size) or context_size < 1:
        raise ConfigError(f"context_size must be a positive integer, got {context_size!r}")
    if max_ctx is not None and context_size > max_ctx:
        raise ConfigError(
            f"context_size {context_size} is larger than the model's context_length {max_ctx}"
        )
    return context_size, getattr(cfg, "vocab_size", None)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters are (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def prepare_prompt(
    idx: TokenIds,
    attention_mask: torch.Tensor | None,
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (B, T) on ``device`` and a bool mask (B, T) (None when nothing is padded)."""
    if isinstance(idx, torch.Tensor):
        if idx.dim() != 2:
            raise DataError(
                f"idx must be a (batch, tokens) tensor, got shape {tuple(idx.shape)}"
                + ("; use idx.unsqueeze(0) for one sequence" if idx.dim() == 1 else "")
            )
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise DataError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.shape[0] == 0 or idx.shape[1] == 0:
            raise DataError(
                f"empty prompt: idx has shape {tuple(idx.shape)}; give at least one token"
            )
        ids = idx.to(device=device, dtype=torch.long)
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(idx.shape):
                raise DataError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, idx has "
                    f"{tuple(idx.shape)}; they must match"
                )
            mask = attention_mask.to(device=device).bool()
            if not bool(mask[:, -1].all()):
                raise DataError(
                    "attention_mask: every sequence must end with a real token (left padding); "
                    "generation appends after the last column"
                )
            if bool((mask[:, 1:].int() < mask[:, :-1].int()).any()):
                raise DataError(
                    "attention_mask must be left padding (0s then 1s in each row); a 0 after a 1 "
                    "found"
                )
        return ids, mask
    if attention_mask is not None:
        raise ConfigError(
            "attention_mask is only for a padded tensor idx; a list of sequences is padded for you"
        )
    seqs = list(idx)
    if not seqs:
        raise DataError("empty prompt: idx is an empty list; give at least one token")
    if all(is_int(t) for t in seqs):
        seqs = [seqs]  # a flat list of ids is one sequence
    rows: list[list[int]] = []
    for b, seq in enumerate(seqs):
        row = seq.tolist() if isinstance(seq, torch.Tensor) else list(seq)
        if not row:
            raise DataError(f"empty prompt: sequence {b} has no tokens; give at least one token")
        for j, t in enumerate(row):
            if not is_int(t):
                raise DataError(f"sequence {b}, position {j}: token id {t!r} is not an integer")
        rows.append(row)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[b, width - len(row) :] = True
    padded = not bool(mask.all())
    return ids.to(device), (mask.to(device) if padded else None)


def check_vocab(ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int | None) -> None:
    """A DataError naming the first real token id outside the vocabulary, if any."""
    real = ids if mask is None else ids.masked_fill(~mask, 0)
    bad = (real < 0) if vocab_size is None else (real < 0) | (real >= vocab_size)
    if bool(bad.any()):
        b, j = (int(v) for v in bad.nonzero()[0])
        tok = int(ids[b, j])
        raise DataError(
            f"token id {tok} (sequence {b}, position {j}) is outside the model's vocabulary "
            f"of {vocab_size} ids (0..{(vocab_size or 0) - 1}); was the prompt encoded with a "
            "tokenizer that matches this model?"
        )
