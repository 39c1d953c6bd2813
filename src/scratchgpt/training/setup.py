"""What the loop sets up before its first step: device, precision, optimizer, step counts and the
learning-rate schedule. Each is a small function of the config, usable (and tested) alone."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import ConfigError, DataError
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.sampler import EpochBatchSampler
from scratchgpt.training.schedules import LRSchedule


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; other names are checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is mps but MPS is not available; use --device cpu")
    return device


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively rather than emulated."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for 'fp32' | 'bf16' | 'auto' on ``device`` (None: plain fp32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_has_fast_bf16()
    else:
        supported = False
    if precision == "auto":
        return torch.bfloat16 if supported else None
    if not supported:
        warnings.warn(
            f"bf16 was requested but {device} has no native bf16 support; autocast will emulate "
            "it (slower than fp32). Use --precision fp32 or auto.",
            stacklevel=2,
        )
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """bf16 autocast on ``device``, or nothing for plain fp32 (``dtype`` None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(
    model: nn.Module, config: TrainConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and norm scales/shifts never,
    embedding tables only when ``decay_embeddings``; every parameter with
    ``decay_all_parameters`` (the book's recipe). A tied head is the embedding's tensor."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # unique tensors: a tied head appears once
        if not p.requires_grad:
            continue
        is_embedding = id(p) in embedding_ids
        matrix = p.ndim >= 2 and (config.decay_embeddings or not is_embedding)
        if matrix or config.decay_all_parameters:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"lr": config.lr, "betas": (config.beta1, config.beta2), "eps": config.adam_eps}
    try:
        return torch.optim.AdamW(groups, **kwargs, fused=fused)
    except RuntimeError:
        # The fused kernel is not available for every device and dtype.
        return torch.optim.AdamW(groups, **kwargs)


def clip_norm(config: TrainConfig, step: int) -> float:
    """The gradient-clipping norm of the 0-based optimizer ``step`` (inf: no clipping). Without
    ``clip_during_warmup`` the warm-up steps are not clipped: the book's appendix D clips from
    ``global_step >= warmup_steps`` on."""
    if config.grad_clip <= 0 or (not config.clip_during_warmup and step < config.warmup_steps):
        return float("inf")
    return config.grad_clip


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def steps_per_epoch(
    n_train: int, config: TrainConfig, world_size: int = 1, *, unit: str = "window"
) -> int:
    """Optimizer steps in one epoch of ``n_train`` examples (``unit``: what one is called in
    messages: window, text, example); a DataError when not even one fits."""
    k = config.grad_accum_steps
    batches = EpochBatchSampler(
        n_train, config.batch_size, shuffle=False, drop_last=config.drop_last, seed=0, epoch=0
    ).num_batches()
    if batches == 0:
        raise DataError(
            f"the training data gives {n_train} {unit}(s), fewer than the batch size "
            f"{config.batch_size} (with drop_last no batch is left): use a smaller batch size"
            + (", a smaller stride or max_length" if unit == "window" else "")
            + ", or more data"
        )
    steps = batches // (k * world_size)
    if steps < 1:
        raise DataError(
            f"the training data gives {n_train} {unit}(s) = {batches} micro-batch(es) "
            f"of {config.batch_size} per epoch, fewer than grad_accum_steps={k}"
            + (f" x {world_size} ranks" if world_size > 1 else "")
            + ": use a smaller batch size or grad_accum_steps"
            + (", shorter windows" if unit == "window" else "")
            + ", or more data"
        )
    return steps


def total_steps(config: TrainConfig, steps_per_epoch: int, tokens_per_step: int) -> int:
    """The run's length: the first of max_steps, max_epochs and max_tokens to be reached."""
    if not config.has_stop:
        raise ConfigError("set at least one of train.max_steps, train.max_epochs, train.max_tokens")
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        limits.append(config.max_epochs * steps_per_epoch)
    if config.max_tokens is not None:
        limits.append(-(-config.max_tokens // tokens_per_step))
    return min(limits)


def make_schedule(config: TrainConfig, total_steps: int | None) -> LRSchedule:
    """The learning-rate schedule of ``config`` over ``total_steps``."""
    return LRSchedule(
        peak_lr=config.lr,
        kind=config.schedule,
        warmup_steps=config.warmup_steps,
        warmup_init_lr=config.warmup_init_lr,
        min_lr=config.min_lr,
        total_steps=total_steps,
    )
