"""The training loop, written once for every task (the book's ``train_model_simple`` of chapter 5
with appendix D's warm-up, cosine decay and gradient clipping, made resumable).

One optimizer step = ``grad_accum_steps`` micro-batches, each loss divided by that number, so k
micro-batches of size b give the gradient of one batch of size k*b. The data order of epoch e is
a permutation drawn from a private generator seeded by (seed, e); the training state stores the
epoch and the index of the next micro-batch in it, so a resumed run continues with exactly the
batch the interrupted one would have used. Dropout draws from the global torch RNG, whose state
(with Python's and NumPy's) is saved in every checkpoint. Evaluation and greedy samples run in
eval mode over fixed batches and draw no random numbers, so they never shift the sequence.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

from scratchgpt.errors import ConfigError, DataError, ScratchGPTError
from scratchgpt.fileio import PathLike
from scratchgpt.training import distributed as dd
from scratchgpt.training import state as st
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.logging import (
    METRICS_FILE,
    MetricsLogger,
    Progress,
    format_summary,
    truncate_metrics,
    write_run_json,
)
from scratchgpt.training.schedules import LRSchedule
from scratchgpt.training.task import Task


class TrainingDivergedError(ScratchGPTError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished (or interrupted) run returns."""

    status: str  # "completed" | "interrupted"
    steps: int
    tokens_seen: int
    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    val_loss: float | None
    summary: dict[str, Any] = field(default_factory=dict)


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


def build_optimizer(
    model: nn.Module, config: TrainConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and norm scales/shifts never,
    embedding tables only when ``decay_embeddings``. A tied head is the embedding's tensor."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # unique tensors: a tied head appears once
        if not p.requires_grad:
            continue
        is_embedding = id(p) in embedding_ids
        if p.ndim >= 2 and (config.decay_embeddings or not is_embedding):
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


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _make_schedule(config: TrainConfig, total_steps: int | None) -> LRSchedule:
    return LRSchedule(
        peak_lr=config.lr,
        kind=config.schedule,
        warmup_steps=config.warmup_steps,
        warmup_init_lr=config.warmup_init_lr,
        min_lr=config.min_lr,
        total_steps=total_steps,
    )


class _StopFlag:
    """SIGINT/SIGTERM once: finish the step, save, stop. Twice: abort at once."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.requested: str | None = None
        self._notify = notify
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._notify(
            f"{self.requested}: stopping after this step and saving a checkpoint "
            "(press Ctrl-C again to abort without saving)"
        )

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    model: nn.Module,
    task: Task,
    train_data: Dataset,
    val_data: Dataset | None,
    config: TrainConfig,
    run_dir: PathLike,
    *,
    tokenizer: Any = None,
    run_config: dict[str, Any] | None = None,
    resume: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    metadata: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` and write logs and checkpoints into ``run_dir``.

    ``run_dir`` must exist (``prepare_run_dir`` makes it). With ``resume``, training continues
    from the newest complete checkpoint there (or starts fresh if there is none).
    ``run_config`` is the full configuration stored in run.json and beside each checkpoint
    (default: ``{"train": config}``); ``metadata`` goes into each checkpoint's scratchgpt.json.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / st.CHECKPOINTS_DIR
    if run_config is None:
        run_config = {"train": dataclasses.asdict(config)}
    collate = collate_fn or default_collate
    dctx = dd.init_distributed()
    dist_on, world, is_main = dctx.enabled, dctx.world_size, dctx.is_main
    fsdp = dist_on and dd.check_strategy(config.strategy) == "fsdp"
    device = dd.rank_device(resolve_device(config.device), dctx)
    autocast_dtype = resolve_precision(config.precision, device)
    k = config.grad_accum_steps
    kw = k * world  # micro-batches of one optimizer step, over all ranks

    def autocast() -> AbstractContextManager:
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    # ---- data: how many micro-batches an epoch has, and the total number of steps
    n_train = len(train_data)  # type: ignore[arg-type]
    probe = EpochBatchSampler(
        n_train, config.batch_size, shuffle=False, drop_last=config.drop_last, seed=0, epoch=0
    )
    steps_per_epoch = probe.num_batches() // kw
    if probe.num_batches() == 0:
        raise DataError(
            f"the training data gives {n_train} window(s), fewer than batch_size="
            f"{config.batch_size} (with drop_last no batch is left): use a smaller batch_size, a "
            "smaller stride or max_length, or more data"
        )
    if steps_per_epoch < 1:
        raise DataError(
            f"the training data gives {n_train} window(s) = {probe.num_batches()} micro-batch(es) "
            f"of {config.batch_size} per epoch, fewer than grad_accum_steps={k}"
            + (f" x {world} ranks" if dist_on else "")
            + ": use a smaller batch_size or grad_accum_steps, shorter windows, or more data"
        )
    if not config.has_stop:
        raise ConfigError("set at least one of train.max_steps, train.max_epochs, train.max_tokens")
    first = collate([train_data[0]])
    tokens_per_step = task.count_tokens(first) * config.batch_size * kw
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        limits.append(config.max_epochs * steps_per_epoch)
    if config.max_tokens is not None:
        limits.append(-(-config.max_tokens // tokens_per_step))
    total_steps = min(limits)
    schedule = _make_schedule(config, total_steps)

    model.to(device)
    if is_main:
        st.remove_temporary(ckpt_root)
    notify = (log or print) if is_main else _quiet
    # Weights are loaded before wrapping: FSDP shards whatever the model holds at that moment.
    found = None
    if resume:
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ConfigError("resuming needs a model with a .cfg (GPTConfig)")
        found = st.find_resume_checkpoint(ckpt_root, cfg)
        if found is None:
            notify(f"no complete checkpoint in {ckpt_root}: starting from scratch")
        else:
            st.load_weights_into(model, found["weights"], found["path"] / "model.safetensors")
    skeleton = dd.skeleton_of(model) if fsdp and is_main else None
    train_model: nn.Module = (
        dd.wrap_model(model, config.strategy, device, dctx) if dist_on else model
    )
    forward_model: nn.Module = torch.compile(train_model) if config.compile else train_model  # type: ignore[assignment]
    # The fused kernel is one pass over all parameters: on a 2-core CPU it makes the AdamW step
    # of GPT-2 small ~15x faster than the default multi-tensor path. (FSDP's DTensor parameters
    # take the default path.)
    optimizer = build_optimizer(
        model, config, fused=device.type in ("cpu", "cuda") if not fsdp else None
    )
    params = [p for p in model.parameters() if p.requires_grad]

    # ---- fresh start or resume
    step = epoch = batch_in_epoch = tokens_seen = 0
    best_val: float | None = None
    last_val: float | None = None
    last_ckpt: Path | None = None
    best_ckpt: Path | None = None
    elapsed_before = 0.0
    rng_state = None
    if found is not None:
        s = found["state"]
        try:
            if fsdp:
                dd.load_full_optimizer(model, optimizer, s["optimizer"])
            else:
                optimizer.load_state_dict(s["optimizer"])
        except (ValueError, KeyError) as e:
            raise st.CheckpointError(
                f"{found['path'] / st.STATE_FILE}: optimizer state does not fit this model ({e})"
            ) from None
        step, epoch, batch_in_epoch = int(s["step"]), int(s["epoch"]), int(s["batch_in_epoch"])
        tokens_seen = int(s["tokens_seen"])
        best_val, last_val = s.get("best_val_loss"), s.get("val_loss")
        best_name = s.get("best_checkpoint")
        best_ckpt = ckpt_root / best_name if best_name else None
        elapsed_before = float(s.get("elapsed_s", 0.0))
        last_ckpt = found["path"]
        rng_state = s["rng"]
        if dctx.rank > 0:
            # Each rank's own dropout stream; a new rank (the world grew) gets a fresh one.
            per_rank = s.get("rng_ranks") or []
            rng_state = per_rank[dctx.rank] if dctx.rank < len(per_rank) else None
            if rng_state is None:
                torch.manual_seed(epoch_seed(config.seed + dctx.rank, step))
        saved_seed = found["run_config"].get("train", {}).get("seed")
        if saved_seed is not None and saved_seed != config.seed:
            warnings.warn(
                f"resuming a run trained with seed {saved_seed} under seed {config.seed}: the data "
                "order of later epochs follows the new seed",
                stacklevel=2,
            )
        if batch_in_epoch % kw:
            raise st.CheckpointError(
                f"{found['path']}: saved at micro-batch {batch_in_epoch} of an epoch, which is not a "
                f"multiple of grad_accum_steps={k}"
                + (f" x {world} ranks" if dist_on else "")
                + "; resume with the original global batch (ranks x batch_size x grad_accum_steps)"
            )
        if batch_in_epoch >= steps_per_epoch * kw:
            epoch, batch_in_epoch = epoch + 1, 0
        dropped = truncate_metrics(run_dir / METRICS_FILE, step) if is_main else 0
        notify(
            f"resuming from {found['path'].name} (step {step}, epoch {epoch + 1}, "
            f"{tokens_seen:,} tokens seen)"
            + (f"; dropped {dropped} later log record(s)" if dropped else "")
        )
        del found
    else:
        if is_main:
            (run_dir / METRICS_FILE).unlink(missing_ok=True)
            for p in st.list_checkpoints(ckpt_root):
                shutil.rmtree(p)
            for name in (st.LATEST_FILE, st.BEST_FILE):
                (ckpt_root / name).unlink(missing_ok=True)
        # Rank r > 0 gets its own dropout stream; rank 0's is the single-process one.
        torch.manual_seed(config.seed + dctx.rank)
        random.seed(config.seed + dctx.rank)
        np.random.seed((config.seed + dctx.rank) % 2**32)

    extra: dict[str, Any] | None = {"resumed_from_step": step} if resume else None
    if dist_on:
        extra = {
            **(extra or {}),
            "distributed": {
                "world_size": world,
                "strategy": config.strategy,
                "global_batch": config.batch_size * kw,
                "backend": _backend_name(),
            },
        }
    if is_main:
        write_run_json(
            run_dir, run_config, argv=list(argv) if argv is not None else None, extra=extra
        )
    logger: Any = MetricsLogger(run_dir, tensorboard=config.tensorboard) if is_main else _NoLog()
    progress = Progress(
        total_steps, step, enabled=config.progress and sys.stderr.isatty() and is_main
    )
    say = (progress.write if log is None else log) if is_main else _quiet
    if dist_on:
        dd.barrier()  # the old run's files are gone before any rank goes on

    # Evaluation uses fixed batches in the natural order, collated once: no DataLoader iterator,
    # so no draw from the global RNG.
    eval_cache: dict[str, list[Any]] = {}

    def eval_batches(name: str, data: Dataset) -> list[Any]:
        if name not in eval_cache:
            n = len(data)  # type: ignore[arg-type]
            sampler = EpochBatchSampler(
                n, config.batch_size, shuffle=False, drop_last=False, seed=0, epoch=0
            )
            batches = []
            for idx in sampler:
                if len(batches) >= config.eval_batches:
                    break
                batches.append(collate([data[i] for i in idx]))
            eval_cache[name] = batches
        return [to_device(b, device) for b in eval_cache[name]]

    def run_eval() -> dict[str, float]:
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        with torch.no_grad(), autocast():
            for key, value in task.evaluate(
                forward_model, eval_batches("train", train_data)
            ).items():
                out[f"eval_train_{key}"] = value
            if val_data is not None and len(val_data) > 0:  # type: ignore[arg-type]
                for key, value in task.evaluate(
                    forward_model, eval_batches("val", val_data)
                ).items():
                    out[f"val_{key}"] = value
        model.train(was_training)
        return out

    def run_sample() -> str | None:
        if config.sample_tokens <= 0:
            return None
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast():
            text = task.sample(model)
        model.train(was_training)
        return text

    def save(current_step: int) -> Path:
        nonlocal last_ckpt, best_ckpt, best_val
        if dist_on:
            return save_distributed(current_step)
        training_state = {
            "step": current_step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "tokens_seen": tokens_seen,
            "optimizer": optimizer.state_dict(),
            "scheduler": {**schedule.state_dict(), "step": current_step},
            "rng": st.capture_rng_state(),
            "val_loss": last_val,
            "best_val_loss": best_val,
            "best_checkpoint": best_ckpt.name if best_ckpt else None,
            "elapsed_s": elapsed_before + session_seconds(),
            "seed": config.seed,
        }
        is_best = last_val is not None and (best_val is None or last_val < best_val)
        if is_best:
            training_state["best_val_loss"] = last_val
            training_state["best_checkpoint"] = st.step_dirname(current_step)
        ckpt_meta = {
            **(metadata or {}),
            "step": current_step,
            "tokens_seen": tokens_seen,
            "val_loss": last_val,
        }
        path = st.save_training_checkpoint(
            ckpt_root,
            current_step,
            model,
            tokenizer,
            training_state,
            run_config,
            metadata=ckpt_meta,
        )
        if is_best:
            best_val, best_ckpt = last_val, path
            st.set_best(ckpt_root, path)
        st.prune_checkpoints(ckpt_root, config.keep_last, config.keep_best)
        last_ckpt = path
        return path

    def save_distributed(current_step: int) -> Path:
        """Every rank takes part (RNG states, FSDP's gathers); rank 0 writes the files."""
        nonlocal last_ckpt, best_ckpt, best_val
        rng_ranks = dd.all_gather_objects(st.capture_rng_state())
        if fsdp:
            full_model = dd.gather_full_model(model, skeleton, dctx)  # type: ignore[arg-type]
            opt_state = dd.gather_full_optimizer(model, optimizer, dctx)
        else:
            full_model = model
            opt_state = optimizer.state_dict() if is_main else None
        is_best = last_val is not None and (best_val is None or last_val < best_val)
        path = ckpt_root / st.step_dirname(current_step)
        if is_main:
            training_state = {
                "step": current_step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "tokens_seen": tokens_seen,
                "optimizer": opt_state,
                "scheduler": {**schedule.state_dict(), "step": current_step},
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "world_size": world,
                "val_loss": last_val,
                "best_val_loss": last_val if is_best else best_val,
                "best_checkpoint": st.step_dirname(current_step)
                if is_best
                else (best_ckpt.name if best_ckpt else None),
                "elapsed_s": elapsed_before + session_seconds(),
                "seed": config.seed,
            }
            ckpt_meta = {
                **(metadata or {}),
                "step": current_step,
                "tokens_seen": tokens_seen,
                "val_loss": last_val,
            }
            path = st.save_training_checkpoint(
                ckpt_root, current_step, full_model, tokenizer, training_state, run_config,
                metadata=ckpt_meta,
            )  # fmt: skip
            if is_best:
                st.set_best(ckpt_root, path)
            st.prune_checkpoints(ckpt_root, config.keep_last, config.keep_best)
        if is_best:
            best_val, best_ckpt = last_val, path
        last_ckpt = path
        dd.barrier()  # a checkpoint is complete on disk before any rank moves on
        return path

    session_start = time.perf_counter()
    train_seconds = 0.0
    session_tokens = 0
    session_steps = 0
    seq_len = task.sequence_length(first)

    def session_seconds() -> float:
        return time.perf_counter() - session_start

    def eval_line(current_step: int, ep: int, metrics: dict[str, float]) -> str:
        parts = [f"Ep {ep} (Step {current_step:06d}):"]
        if "eval_train_loss" in metrics:
            parts.append(f"Train loss {metrics['eval_train_loss']:.3f},")
        if "val_loss" in metrics:
            parts.append(f"Val loss {metrics['val_loss']:.3f}")
        # Tasks with an accuracy metric (classification) show it too, as the book prints it.
        for key, label in (("eval_train_accuracy", "Train acc"), ("val_accuracy", "Val acc")):
            if key in metrics:
                parts[-1] = parts[-1].rstrip(",") + ","
                parts.append(f"{label} {metrics[key] * 100:.2f}%")
        return " ".join(parts).rstrip(",")

    status = "completed"
    loader_iter: Iterator[Any] | None = None
    last_ckpt_step = step if last_ckpt is not None else -1
    if rng_state is not None:
        # Last thing before the first step: nothing above may shift the dropout sequence.
        st.restore_rng_state(rng_state)
    model.train()
    ddp_module = train_model if dist_on and not fsdp else None
    synced_stop = False  # under torchrun: a stop every rank has agreed on (see below)

    def stopping() -> bool:
        return synced_stop if dist_on else stop.requested is not None

    def grad_sync(i: int) -> AbstractContextManager:
        """No gradient all-reduce on all but the last micro-batch of a step."""
        last = i == k - 1
        if ddp_module is not None and not last:
            return ddp_module.no_sync()  # type: ignore[operator]
        if fsdp:
            model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return nullcontext()

    try:
        with _StopFlag(say) as stop:
            if config.eval_at_start and step == 0:
                metrics = run_eval()
                last_val = metrics.get("val_loss", last_val)
                logger.log({"step": 0, "epoch": 1, "tokens_seen": 0, "lr": schedule(0), **metrics})
                say(eval_line(0, 1, metrics))
            while step < total_steps and not stopping():
                if config.max_tokens is not None and tokens_seen >= config.max_tokens:
                    break
                if loader_iter is None:
                    sampler = EpochBatchSampler(
                        n_train,
                        config.batch_size,
                        shuffle=config.shuffle,
                        drop_last=config.drop_last,
                        seed=config.seed,
                        epoch=epoch,
                        start=batch_in_epoch,
                        rank=dctx.rank,
                        world_size=world,
                    )
                    loader = DataLoader(
                        train_data,
                        batch_sampler=sampler,
                        num_workers=config.num_workers,
                        collate_fn=collate,
                        pin_memory=device.type == "cuda",
                        # A private generator: creating the iterator must not draw from the
                        # global RNG, whose sequence belongs to dropout.
                        generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch)),
                    )
                    loader_iter = iter(loader)
                t0 = time.perf_counter()
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                step_tokens = 0
                for i in range(k):
                    batch = to_device(next(loader_iter), device)
                    with grad_sync(i):
                        with autocast():
                            loss = task.loss(forward_model, batch)
                        (loss / k).backward()
                    loss_sum += loss.detach().float()
                    step_tokens += task.count_tokens(batch)
                if dist_on:
                    # One collective: the mean loss and the tokens of all ranks, and whether any
                    # rank was asked to stop, so that all of them stop after the same step.
                    total, all_tokens, votes = dd.all_sum(
                        [float(loss_sum), step_tokens, float(stop.requested is not None)], device
                    )
                    train_loss, step_tokens = total / kw, int(all_tokens)
                    if votes > 0:
                        synced_stop = True
                        stop.requested = stop.requested or "SIGTERM"
                else:
                    train_loss = float(loss_sum) / k
                ep_of_step = epoch + 1
                if not math.isfinite(train_loss):
                    raise TrainingDivergedError(
                        _diverged("training loss", train_loss, step + 1, ep_of_step, last_ckpt)
                    )
                max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
                grad_norm = dd.full_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
                if not math.isfinite(grad_norm):
                    raise TrainingDivergedError(
                        _diverged("gradient norm", grad_norm, step + 1, ep_of_step, last_ckpt)
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += step_tokens
                batch_in_epoch += kw
                if batch_in_epoch >= steps_per_epoch * kw:
                    epoch, batch_in_epoch, loader_iter = epoch + 1, 0, None
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - t0
                train_seconds += dt
                session_tokens += step_tokens
                session_steps += 1
                tok_s = step_tokens / dt if dt > 0 else 0.0
                progress.update(train_loss, tok_s, lr)

                record: dict[str, Any] = {
                    "step": step,
                    "epoch": ep_of_step,
                    "tokens_seen": tokens_seen,
                    "lr": lr,
                    "train_loss": train_loss,
                    "grad_norm": grad_norm,
                    "tokens_per_s": round(tok_s, 1),
                }
                finished = step >= total_steps or (
                    config.max_tokens is not None and tokens_seen >= config.max_tokens
                )
                final = finished or stopping()
                checkpoint_now = final or (
                    config.checkpoint_interval > 0 and step % config.checkpoint_interval == 0
                )
                eval_now = (config.eval_interval > 0 and step % config.eval_interval == 0) or final
                # A checkpoint's "best" rank needs a validation loss of that very step.
                if checkpoint_now and val_data is not None:
                    eval_now = True
                if eval_now:
                    metrics = run_eval()
                    record.update(metrics)
                    last_val = metrics.get("val_loss", last_val)
                    say(eval_line(step, ep_of_step, metrics))
                sample_now = (
                    config.sample_interval > 0 and step % config.sample_interval == 0
                ) or finished
                if sample_now:
                    text = run_sample()
                    if text is not None:
                        record["sample"] = text
                        say(f"sample (step {step}): {text!r}")
                if step % config.log_interval == 0 or eval_now or sample_now or final:
                    logger.log(record)
                if checkpoint_now:
                    save(step)
                    last_ckpt_step = step
            if stopping():
                status = "interrupted"
                if last_ckpt_step != step:
                    save(step)
                    last_ckpt_step = step
    except Exception as e:
        if dist_on and dd.is_comm_failure(e):
            raise dd.DistributedError(dd.lost_peer_message(dctx, step + 1, last_ckpt, e)) from None
        raise
    finally:
        logger.close()
        progress.close()
    if last_ckpt_step != step:
        save(step)

    summary: dict[str, Any] = {
        "status": status,
        "steps": step,
        "session_steps": session_steps,
        "tokens_seen": tokens_seen,
        "session_tokens": session_tokens,
        "session_seconds": session_seconds(),
        "train_seconds": train_seconds,
        "tokens_per_s": session_tokens / train_seconds if train_seconds > 0 else 0.0,
        "val_loss": last_val,
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "mfu": None,
    }
    cfg = getattr(model, "cfg", None)
    if cfg is not None and session_steps > 0 and is_main:
        from scratchgpt.model.stats import model_stats
        from scratchgpt.training.perf import peak_tflops

        flops_per_token = model_stats(cfg.replace(context_length=seq_len)).train_flops_per_token
        if config.peak_tflops is not None:
            peak, source = config.peak_tflops, "given"
        else:
            peak, source = peak_tflops(device, autocast_dtype or torch.float32)
        achieved = summary["tokens_per_s"] * flops_per_token / 1e12
        summary.update(
            train_flops_per_token=flops_per_token,
            achieved_tflops=achieved,
            peak_tflops=peak,
            peak_source=source,
            mfu=achieved / peak if peak > 0 else None,
        )
    say(format_summary(summary))
    if config.plot and is_main:
        try:
            from scratchgpt.training.plots import plot_run

            plot_run(run_dir)
        except Exception as e:  # a plot must never cost a finished run its exit status
            warnings.warn(f"could not write the plots: {e}", stacklevel=2)
    return TrainResult(
        status=status,
        steps=step,
        tokens_seen=tokens_seen,
        run_dir=run_dir,
        last_checkpoint=last_ckpt,
        best_checkpoint=best_ckpt,
        val_loss=last_val,
        summary=summary,
    )


def _quiet(message: str) -> None:
    """Where ranks other than 0 print: nowhere (rank 0 speaks for the job)."""


class _NoLog:
    """The metrics logger of ranks other than 0."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _backend_name() -> str:
    import torch.distributed as tdist

    return str(tdist.get_backend())


def _diverged(what: str, value: float, step: int, epoch: int, last_ckpt: Path | None) -> str:
    keep = (
        f"the last good checkpoint is {last_ckpt}"
        if last_ckpt is not None
        else "no checkpoint was saved before it"
    )
    return (
        f"non-finite {what} ({value}) at step {step} (epoch {epoch}); training stopped and {keep}. "
        "Lower the learning rate, add warm-up or gradient clipping (--grad-clip 1.0), or train in "
        "fp32; then resume with --resume or start again."
    )


def prepare_run_dir(run_dir: PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder. An existing one needs ``resume`` (continue it) or ``overwrite``
    (delete it first; only done for folders that look like runs, or are empty).

    Under torchrun this joins the process group; rank 0 prepares the folder and every rank
    gets its result (or its error)."""
    dd.init_distributed()
    p = dd.run_on_main(lambda: _prepare_run_dir(run_dir, overwrite=overwrite, resume=resume))
    dd.barrier()
    return p


def _prepare_run_dir(run_dir: PathLike, *, overwrite: bool, resume: bool) -> Path:
    p = Path(run_dir)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"{p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        if resume:
            return p
        if not overwrite:
            raise FileExistsError(
                f"{p} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        markers = ("run.json", METRICS_FILE, st.CHECKPOINTS_DIR)
        if not any((p / m).exists() for m in markers):
            raise FileExistsError(
                f"{p} is not empty and does not look like a scratchgpt run folder (no run.json, "
                f"{METRICS_FILE} or {st.CHECKPOINTS_DIR}/); refusing to delete it: choose another --out"
            )
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)
    return p
