"""Preference data (the book's chapter 7 bonus, DPO): each record is a prompt with a ``chosen``
and a ``rejected`` response.

A :class:`PreferenceDataset` item is the pair, tokenized in a prompt style exactly as instruction
tuning tokenizes one example (``(ids, prompt_length)`` for the chosen and for the rejected text),
and :class:`PreferenceCollator` puts a batch of B pairs into one ``(2B, T)`` batch: the B chosen
sequences, then the B rejected ones, padded to one length, with targets that count only the
response tokens (the prompt and the padding are ``IGNORE_INDEX``). One forward pass then scores
both responses of every pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scratchgpt.data.instructions import (
    DEFAULT_STYLE,
    IGNORE_INDEX,
    PAD_TOKEN_ID,
    InstructionDataset,
    PromptStyle,
)

if TYPE_CHECKING:
    import torch


class PreferenceDataset:
    """Pre-tokenized pairs: item ``i`` is ``((chosen_ids, prompt_length), (rejected_ids,
    prompt_length))``, each text the prompt followed by that response in the prompt style."""

    def __init__(
        self,
        records: Sequence[Mapping[str, str]],
        tokenizer: Any,
        style: str | PromptStyle = DEFAULT_STYLE,
    ) -> None:
        chosen = [{**r, "output": r["chosen"]} for r in records]
        rejected = [{**r, "output": r["rejected"]} for r in records]
        c_ds = InstructionDataset(chosen, tokenizer, style)
        self.style = c_ds.style
        r_ds = InstructionDataset(rejected, tokenizer, self.style)
        self.items = list(zip(c_ds.items, r_ds.items))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
        return self.items[i]


def preference_collate(
    batch: Sequence[Any],
    pad_token_id: int = PAD_TOKEN_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` of shape (2B, T): rows ``0..B-1`` the chosen texts, ``B..2B-1`` the
    rejected ones. Targets are the inputs shifted by one, ``ignore_index`` where they predict a
    prompt token or padding; then both are cut to ``allowed_max_length``. No end-of-text token
    is appended (the book's DPO collate scores the response text alone)."""
    import torch

    seqs = [pair[0] for pair in batch] + [pair[1] for pair in batch]
    longest = max(len(ids) for ids, _ in seqs)
    inputs = torch.full((len(seqs), longest), pad_token_id, dtype=torch.long)
    targets = torch.full((len(seqs), longest), ignore_index, dtype=torch.long)
    for row, (ids, plen) in enumerate(seqs):
        n = len(ids)
        inputs[row, :n] = torch.tensor(ids, dtype=torch.long)
        # Target t predicts token t + 1: the response tokens are ids[plen:], predicted from
        # positions plen - 1 .. n - 2.
        start = max(plen - 1, 0)
        targets[row, start : n - 1] = torch.tensor(ids[start + 1 : n], dtype=torch.long)
    if allowed_max_length is not None:
        inputs = inputs[:, :allowed_max_length]
        targets = targets[:, :allowed_max_length]
    return inputs, targets


@dataclass(frozen=True)
class PreferenceCollator:
    """``preference_collate`` with fixed options, picklable for DataLoader workers."""

    pad_token_id: int = PAD_TOKEN_ID
    ignore_index: int = IGNORE_INDEX
    allowed_max_length: int | None = None

    def __call__(self, batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return preference_collate(
            batch,
            pad_token_id=self.pad_token_id,
            ignore_index=self.ignore_index,
            allowed_max_length=self.allowed_max_length,
        )
