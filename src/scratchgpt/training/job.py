"""The job as the training loop sees it: one interface, with a no-op twin for one process.

``for_job(strategy)`` returns :class:`Distributed` under torchrun (DDP or FSDP2, the helpers of
``training.distributed``) and :class:`SingleProcess` otherwise, whose collectives are the identity
and whose barriers do nothing. The loop calls the same methods either way, so a single process and
a torchrun job share one path (one save, one step) with no ``if distributed:`` forks.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from scratchgpt.training.distributed import (
    DistContext,
    all_gather_objects,
    all_sum,
    barrier,
    check_strategy,
    gather_full_model,
    gather_full_optimizer,
    init_distributed,
    load_full_optimizer,
    rank_device,
    skeleton_of,
    wrap_model,
)


class SingleProcess:
    """The job of one process: every collective is the identity, every barrier a no-op. The
    loop calls the same methods under torchrun (:class:`Distributed`), so it has one path."""

    enabled = False
    fsdp = False

    def __init__(self, ctx: DistContext | None = None) -> None:
        self.ctx = ctx or DistContext()

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on."""
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop runs forward and backward through."""
        return model

    def grad_sync(self, last: bool) -> AbstractContextManager:
        """Around one micro-batch's backward: gradient all-reduce on the last one only."""
        return nullcontext()

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over ranks (one collective)."""
        return list(values)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        return [obj]

    def full_model(self, model: nn.Module) -> nn.Module | None:
        """Collective: the unsharded model rank 0 writes (None on other ranks under FSDP)."""
        return model

    def full_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """Collective: the optimizer state in the single-process layout, on rank 0."""
        return optimizer.state_dict()

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        """Load a single-process-layout optimizer state (every rank keeps its part)."""
        optimizer.load_state_dict(state)

    def barrier(self) -> None:
        """Wait for every rank."""

    def run_info(self, strategy: str, global_batch: int) -> dict[str, Any] | None:
        """run.json's ``distributed`` entry (None: a single process)."""
        return None


class Distributed(SingleProcess):
    """A torchrun job (DDP or FSDP2): the collectives of :class:`SingleProcess`, for real."""

    enabled = True

    def __init__(self, ctx: DistContext, strategy: str) -> None:
        super().__init__(ctx)
        self.strategy = check_strategy(strategy)
        self.fsdp = strategy == "fsdp"
        self._ddp: nn.Module | None = None
        self._model: nn.Module | None = None
        self._skeleton: nn.Module | None = None

    def device(self, device: torch.device) -> torch.device:
        return rank_device(device, self.ctx)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        # Rank 0 keeps a storage-free copy of the structure to write full FSDP checkpoints into.
        if self.fsdp and self.is_main:
            self._skeleton = skeleton_of(model)
        wrapped = wrap_model(model, self.strategy, device, self.ctx)
        self._model = model
        self._ddp = None if self.fsdp else wrapped
        return wrapped

    def grad_sync(self, last: bool) -> AbstractContextManager:
        if self._ddp is not None and not last:
            return self._ddp.no_sync()  # type: ignore[operator]
        if self.fsdp and self._model is not None:
            self._model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return nullcontext()

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        return all_sum(values, device)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        return all_gather_objects(obj)

    def full_model(self, model: nn.Module) -> nn.Module | None:
        if self.fsdp:
            return gather_full_model(model, self._skeleton, self.ctx)  # type: ignore[arg-type]
        return model

    def full_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        if self.fsdp:
            return gather_full_optimizer(model, optimizer, self.ctx)
        return optimizer.state_dict() if self.is_main else None

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        if self.fsdp:
            load_full_optimizer(model, optimizer, state)
        else:
            optimizer.load_state_dict(state)

    def barrier(self) -> None:
        barrier()

    def run_info(self, strategy: str, global_batch: int) -> dict[str, Any] | None:
        import torch.distributed as dist

        return {
            "world_size": self.world_size,
            "strategy": strategy,
            "global_batch": global_batch,
            "backend": str(dist.get_backend()),
        }


def for_job(strategy: str) -> SingleProcess:
    """The job this process belongs to: :class:`Distributed` under torchrun (joining its process
    group), else :class:`SingleProcess`."""
    ctx = init_distributed()
    if not ctx.enabled:
        return SingleProcess(ctx)
    return Distributed(ctx, strategy)
