"""The data order: one seeded permutation per epoch, cut into micro-batches (and, under torchrun,
dealt out to the ranks), starting at any micro-batch so a resumed run continues exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the data order of one epoch; distinct (seed, epoch) pairs give distinct seeds."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


class EpochBatchSampler(Sampler[list[int]]):
    """Micro-batches of indices for one epoch, starting at batch ``start``: a seeded permutation
    (or the natural order), cut into ``batch_size`` pieces."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self.start = seed, epoch, start
        # Under torchrun every rank cuts the same permutation into the same micro-batches and
        # takes every world_size-th one: disjoint parts, and together the single-process order.
        self.rank, self.world_size = rank, world_size

    def num_batches(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __len__(self) -> int:
        return sum(1 for b in range(self.start, self.num_batches()) if self._mine(b))

    def _mine(self, b: int) -> bool:
        return b % self.world_size == self.rank

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.start, self.num_batches()):
            if self._mine(b):
                yield order[b * self.batch_size : (b + 1) * self.batch_size]
