"""The training loop, written once for every task (the book's ``train_model_simple`` of chapter 5
with appendix D's warm-up, cosine decay and gradient clipping, made resumable).

One optimizer step = ``grad_accum_steps`` micro-batches, each loss divided by that number, so k
micro-batches of size b give the gradient of one batch of size k*b. The data order of epoch e is
a permutation drawn from a private generator seeded by (seed, e); the training state stores the
epoch and the index of the next micro-batch in it, so a resumed run continues with exactly the
batch the interrupted one would have used. Dropout draws from the global torch RNG, whose state
(with Python's and NumPy's) is saved in every checkpoint. Evaluation and greedy samples run in
eval mode over fixed batches and draw no random numbers, so they never shift the sequence.

``train`` reads top to bottom: set-up (``setup``), resume or fresh start, the step loop, the
summary. A single process and a torchrun job take the same path: the job is a ``SingleProcess``
or ``Distributed`` object (``distributed.for_job``) whose collectives are no-ops in one process.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import default_collate

from scratchgpt.errors import ScratchGPTError
from scratchgpt.fileio import PathLike
from scratchgpt.training import distributed as dd
from scratchgpt.training import sampler as smp
from scratchgpt.training import setup as su
from scratchgpt.training import state as st
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.engine import Engine, Session
from scratchgpt.training.job import SingleProcess, for_job
from scratchgpt.training.logging import (
    BOOK_STEPS_NOTE,
    METRICS_FILE,
    MetricsLogger,
    NoLog,
    Progress,
    eval_line,
    format_summary,
    truncate_metrics,
    write_run_json,
)
from scratchgpt.training.perf import mfu_report
from scratchgpt.training.resume import find_checkpoint, fresh_start, resume_state
from scratchgpt.training.setup import make_schedule, steps_per_epoch, total_steps
from scratchgpt.training.state import TrainState
from scratchgpt.training.stop import StopFlag
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
    job = for_job(config.strategy)
    device = job.device(su.resolve_device(config.device))
    amp_dtype = su.resolve_precision(config.precision, device)
    kw = config.grad_accum_steps * job.world_size  # micro-batches of one step, over all ranks

    # ---- how long the run is
    n_train = len(train_data)  # type: ignore[arg-type]
    per_epoch = steps_per_epoch(n_train, config, job.world_size, unit=task.unit)
    first = collate([train_data[0]])
    n_steps = total_steps(config, per_epoch, task.count_tokens(first) * config.batch_size * kw)
    schedule = make_schedule(config, n_steps)

    # ---- the model: checkpoint weights first (FSDP shards what the model holds), then the wrapper
    model.to(device)
    if job.is_main:
        st.remove_temporary(ckpt_root)
    notify = partial(dd.print0, writer=log)
    found = find_checkpoint(model, ckpt_root, notify) if resume else None
    train_model = job.wrap(model, device)
    forward_model: nn.Module = torch.compile(train_model) if config.compile else train_model  # type: ignore[assignment]
    # The fused kernel is one pass over all parameters: on a 2-core CPU it makes the AdamW step
    # of GPT-2 small ~15x faster than the default multi-tensor path. (FSDP's DTensor parameters
    # take the default path.)
    optimizer = su.build_optimizer(
        model, config, fused=device.type in ("cpu", "cuda") if not job.fsdp else None
    )
    params = [p for p in model.parameters() if p.requires_grad]

    # ---- fresh start or resume
    rng_state = None
    if found is not None:
        state, rng_state = resume_state(found, model, optimizer, job, config, per_epoch)
        dropped = truncate_metrics(run_dir / METRICS_FILE, state.step) if job.is_main else 0
        notify(
            f"resuming from {found['path'].name} (step {state.step}, epoch {state.epoch + 1}, "
            f"{state.tokens_seen:,} tokens seen)"
            + (f"; dropped {dropped} later log record(s)" if dropped else "")
        )
        del found
    else:
        state = TrainState()
        fresh_start(run_dir, ckpt_root, config.seed, job)

    if job.is_main:
        extra = _run_extras(job, config, state.step if resume else None)
        write_run_json(run_dir, run_config, argv=None if argv is None else list(argv), extra=extra)
    logger: Any = MetricsLogger(run_dir, tensorboard=config.tensorboard) if job.is_main else NoLog()
    progress = Progress(
        n_steps, state.step, enabled=config.progress and sys.stderr.isatty() and job.is_main
    )
    say = partial(dd.print0, writer=log or progress.write)
    job.barrier()  # the old run's files are gone before any rank goes on

    run = Engine(
        model=model,
        forward_model=forward_model,
        task=task,
        config=config,
        job=job,
        device=device,
        amp_dtype=amp_dtype,
        optimizer=optimizer,
        schedule=schedule,
        ckpt_root=ckpt_root,
        tokenizer=tokenizer,
        run_config=run_config,
        metadata=metadata,
        collate=collate,
    )
    session = Session()
    seq_len = task.sequence_length(first)
    status = "completed"
    loader_iter: Iterator[Any] | None = None
    if rng_state is not None:
        # Last thing before the first step: nothing above may shift the dropout sequence.
        st.restore_rng_state(rng_state)
    model.train()
    book_steps = config.step_labels == "book"
    if book_steps:
        say(BOOK_STEPS_NOTE)
    try:
        with StopFlag(say) as stop:
            if config.eval_at_start and state.step == 0:
                metrics = run.evaluate(train_data, val_data)
                state.val_loss = metrics.get("val_loss", state.val_loss)
                logger.log({"step": 0, "epoch": 1, "tokens_seen": 0, "lr": schedule(0), **metrics})
                say(eval_line(0, 1, metrics, book=book_steps))
            while state.step < n_steps and not _stopping(stop, job):
                if config.max_tokens is not None and state.tokens_seen >= config.max_tokens:
                    break
                if loader_iter is None:
                    loader_iter = iter(
                        _epoch_loader(train_data, config, collate, state, job, device)
                    )
                t0 = time.perf_counter()
                lr = schedule(state.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum, step_tokens = run.forward_backward(loader_iter)
                # One collective: the mean loss and the tokens of all ranks, and whether any
                # rank was asked to stop, so that all of them stop after the same step.
                total, all_tokens, votes = job.all_sum(
                    [float(loss_sum), step_tokens, float(stop.requested is not None)], device
                )
                train_loss, step_tokens = total / kw, int(all_tokens)
                if votes > 0:
                    stop.agreed = True
                    stop.requested = stop.requested or "SIGTERM"
                ep_of_step = state.epoch + 1
                _check_finite("training loss", train_loss, state, ep_of_step)
                max_norm = su.clip_norm(config, state.step)
                grad_norm = dd.full_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))
                _check_finite("gradient norm", grad_norm, state, ep_of_step)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if _advance(state, step_tokens, kw, per_epoch):
                    loader_iter = None  # a new epoch: a new order
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = session.add_step(time.perf_counter() - t0, step_tokens)
                tok_s = step_tokens / dt if dt > 0 else 0.0
                progress.update(train_loss, tok_s, lr)

                record = _step_record(state, ep_of_step, lr, train_loss, grad_norm, tok_s)
                record.update(run.moe_metrics())  # expert usage of a mixture of experts
                finished = state.step >= n_steps or (
                    config.max_tokens is not None and state.tokens_seen >= config.max_tokens
                )
                final = finished or _stopping(stop, job)
                checkpoint_now, eval_now, sample_now = _due(
                    config, state.step, finished, final, val_data is not None
                )
                if eval_now:
                    metrics = run.evaluate(train_data, val_data)
                    record.update(metrics)
                    state.val_loss = metrics.get("val_loss", state.val_loss)
                    say(eval_line(state.step, ep_of_step, metrics, book=book_steps))
                if sample_now:
                    text = run.sample()
                    if text is not None:
                        record["sample"] = text
                        say(f"sample (step {state.step}): {text!r}")
                if state.step % config.log_interval == 0 or eval_now or sample_now or final:
                    logger.log(record)
                if checkpoint_now:
                    run.save(state, session.seconds())
            if _stopping(stop, job):
                status = "interrupted"
                if not state.saved_now():
                    run.save(state, session.seconds())
    except Exception as e:
        if job.enabled and dd.is_comm_failure(e):
            message = dd.lost_peer_message(job.ctx, state.step + 1, state.last_checkpoint, e)
            raise dd.DistributedError(message) from None
        raise
    finally:
        logger.close()
        progress.close()
    if not state.saved_now():
        run.save(state, session.seconds())

    summary = session.summary(status, state)
    cfg = getattr(model, "cfg", None)
    if cfg is not None and session.steps > 0 and job.is_main:
        summary.update(
            mfu_report(summary["tokens_per_s"], cfg, seq_len, device, amp_dtype, config.peak_tflops)
        )
    say(format_summary(summary))
    if config.plot and job.is_main:
        _plot(run_dir)
    return TrainResult(
        status=status,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        run_dir=run_dir,
        last_checkpoint=state.last_checkpoint,
        best_checkpoint=state.best_checkpoint,
        val_loss=state.val_loss,
        summary=summary,
    )


# ---------------------------------------------------------------------------------------------
# What the loop does, step by step


def _epoch_loader(
    data: Dataset,
    config: TrainConfig,
    collate: Callable[[list[Any]], Any],
    state: TrainState,
    job: SingleProcess,
    device: torch.device,
) -> DataLoader:
    """This rank's micro-batches of the current epoch, from ``state.batch_in_epoch`` on."""
    batches = smp.EpochBatchSampler(
        len(data),  # type: ignore[arg-type]
        config.batch_size,
        shuffle=config.shuffle,
        drop_last=config.drop_last,
        seed=config.seed,
        epoch=state.epoch,
        start=state.batch_in_epoch,
        rank=job.rank,
        world_size=job.world_size,
    )
    return DataLoader(
        data,
        batch_sampler=batches,
        num_workers=config.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # A private generator: creating the iterator must not draw from the global RNG, whose
        # sequence belongs to dropout.
        generator=torch.Generator().manual_seed(smp.epoch_seed(config.seed, state.epoch)),
    )


def _step_record(
    state: TrainState, epoch: int, lr: float, loss: float, grad_norm: float, tok_s: float
) -> dict[str, Any]:
    """The metrics.jsonl record of a step (evaluations and samples add to it)."""
    return {
        "step": state.step,
        "epoch": epoch,
        "tokens_seen": state.tokens_seen,
        "lr": lr,
        "train_loss": loss,
        "grad_norm": grad_norm,
        "tokens_per_s": round(tok_s, 1),
    }


def _stopping(stop: StopFlag, job: SingleProcess) -> bool:
    """Under torchrun: a stop every rank has agreed on (after a step's collective); in one
    process: as soon as the signal came."""
    return stop.agreed if job.enabled else stop.requested is not None


def _advance(state: TrainState, tokens: int, kw: int, per_epoch: int) -> bool:
    """Count one optimizer step of ``kw`` micro-batches; True when it ended the epoch."""
    state.step += 1
    state.tokens_seen += tokens
    state.batch_in_epoch += kw
    if state.batch_in_epoch >= per_epoch * kw:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        return True
    return False


def _due(
    config: TrainConfig, step: int, finished: bool, final: bool, has_val: bool
) -> tuple[bool, bool, bool]:
    """Whether to checkpoint, evaluate and sample after ``step``."""
    checkpoint = final or (
        config.checkpoint_interval > 0 and step % config.checkpoint_interval == 0
    )
    # The book evaluates when its global_step (updates done - 1) is a multiple of the interval.
    since = step - 1 if config.step_labels == "book" else step
    evaluate = (config.eval_interval > 0 and since % config.eval_interval == 0) or final
    # A checkpoint's "best" rank needs a validation loss of that very step.
    if checkpoint and has_val:
        evaluate = True
    sample = (config.sample_interval > 0 and step % config.sample_interval == 0) or finished
    return checkpoint, evaluate, sample


def _check_finite(what: str, value: float, state: TrainState, epoch: int) -> None:
    if not math.isfinite(value):
        raise TrainingDivergedError(
            _diverged(what, value, state.step + 1, epoch, state.last_checkpoint)
        )


def _run_extras(
    job: SingleProcess, config: TrainConfig, resumed_from: int | None
) -> dict[str, Any] | None:
    """What run.json records beyond the config: the resume step, the torchrun job."""
    extra: dict[str, Any] = {} if resumed_from is None else {"resumed_from_step": resumed_from}
    info = job.run_info(
        config.strategy, config.batch_size * config.grad_accum_steps * job.world_size
    )
    if info is not None:
        extra["distributed"] = info
    return extra or None


def _plot(run_dir: Path) -> None:
    try:
        from scratchgpt.training.plots import plot_run

        plot_run(run_dir)
    except Exception as e:  # a plot must never cost a finished run its exit status
        warnings.warn(f"could not write the plots: {e}", stacklevel=3)


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


# ---------------------------------------------------------------------------------------------
# Names that moved to their own modules; importing them from here still works for one release.

_MOVED = {
    "epoch_seed": "sampler",
    "EpochBatchSampler": "sampler",
    "resolve_device": "setup",
    "cpu_has_fast_bf16": "setup",
    "resolve_precision": "setup",
    "build_optimizer": "setup",
    "to_device": "setup",
    "prepare_run_dir": "run_dir",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    warnings.warn(
        f"scratchgpt.training.loop.{name} moved to scratchgpt.training.{module}.{name}; the old "
        "import path will be removed in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"scratchgpt.training.{module}"), name)
