"""What the training loop does with the model, as methods of one object built at the start of
``train``: the forward/backward of a step's micro-batches, evaluation over fixed batches, greedy
samples, and the one checkpoint save that a single process and every torchrun rank go through.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from scratchgpt.generation import ContextSlideWarning
from scratchgpt.model.moe import expert_usage, moe_aux_loss
from scratchgpt.progress import progress
from scratchgpt.training import state as st
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.job import SingleProcess
from scratchgpt.training.sampler import EpochBatchSampler
from scratchgpt.training.schedules import LRSchedule
from scratchgpt.training.setup import autocast, to_device
from scratchgpt.training.state import TrainState
from scratchgpt.training.task import Task


@dataclass(kw_only=True)
class Engine:
    """What the loop does with the model: the micro-batches of a step, evaluation, samples and
    checkpoints, each a method over the parts built once at the start of ``train``."""

    model: nn.Module
    forward_model: nn.Module
    task: Task
    config: TrainConfig
    job: SingleProcess
    device: torch.device
    amp_dtype: torch.dtype | None
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ckpt_root: Path
    tokenizer: Any
    run_config: dict[str, Any]
    metadata: dict[str, Any] | None
    collate: Callable[[list[Any]], Any]
    eval_cache: dict[str, list[Any]] = field(default_factory=dict)
    # A mixture of experts' step: its load-balancing loss and tokens per expert (None: dense).
    moe_step: dict[str, Any] | None = None

    def forward_backward(self, loader_iter: Iterator[Any]) -> tuple[torch.Tensor, int]:
        """The micro-batches of one optimizer step: summed loss (a tensor) and tokens."""
        k = self.config.grad_accum_steps
        loss_sum = torch.zeros((), device=self.device)
        tokens = 0
        self.moe_step = None
        for i in range(k):
            batch = to_device(next(loader_iter), self.device)
            # No gradient all-reduce on all but the last micro-batch of a step.
            with self.job.grad_sync(last=i == k - 1):
                with autocast(self.device, self.amp_dtype):
                    loss = self.task.loss(self.forward_model, batch)
                    # The reported loss stays the task's; the routers also learn to balance.
                    objective = loss + self._moe_aux_loss(k)
                (objective / k).backward()
            loss_sum += loss.detach().float()
            tokens += self.task.count_tokens(batch)
        return loss_sum, tokens

    def _moe_aux_loss(self, micro_batches: int) -> torch.Tensor | float:
        """``moe_aux_loss_coef`` times the load-balancing loss of the forward pass just run
        (0 for a dense model), and its value and the expert usage summed into ``moe_step``."""
        aux, usage = moe_aux_loss(self.model), expert_usage(self.model)
        if aux is None or usage is None:
            return 0.0
        step = self.moe_step or {"moe_aux_loss": 0.0, "expert_tokens": torch.zeros_like(usage)}
        step["moe_aux_loss"] += float(aux.detach()) / micro_batches
        step["expert_tokens"] += usage
        self.moe_step = step
        return self.config.moe_aux_loss_coef * aux

    def moe_metrics(self) -> dict[str, Any]:
        """The step's metrics.jsonl fields of a mixture of experts: the load-balancing loss
        (k when balanced), tokens per expert (all MoE layers) and the busiest expert's share
        over an even share (1.0: balanced; num_experts: every token to one expert)."""
        if self.moe_step is None:
            return {}
        counts = self.moe_step["expert_tokens"].float()
        load = float(counts.max() / counts.mean()) if counts.sum() > 0 else 0.0
        return {
            "moe_aux_loss": self.moe_step["moe_aux_loss"],
            "expert_tokens": [int(c) for c in counts.tolist()],
            "expert_max_load": round(load, 4),
        }

    def eval_batches(self, name: str, data: Dataset) -> list[Any]:
        """Fixed batches in the natural order, collated once: no DataLoader iterator, so no draw
        from the global RNG."""
        if name not in self.eval_cache:
            n = len(data)  # type: ignore[arg-type]
            order = EpochBatchSampler(
                n, self.config.batch_size, shuffle=False, drop_last=False, seed=0, epoch=0
            )
            batches = []
            for idx in order:
                if len(batches) >= self.config.eval_batches:
                    break
                batches.append(self.collate([data[i] for i in idx]))
            self.eval_cache[name] = batches
        return [to_device(b, self.device) for b in self.eval_cache[name]]

    def evaluate(self, train_data: Dataset, val_data: Dataset | None) -> dict[str, float]:
        """``eval_train_<metric>`` and ``val_<metric>`` of the task's ``evaluate``, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            batches = self._shown("train", self.eval_batches("train", train_data))
            for key, value in self.task.evaluate(self.forward_model, batches).items():
                out[f"eval_train_{key}"] = value
            if val_data is not None and len(val_data) > 0:  # type: ignore[arg-type]
                batches = self._shown("val", self.eval_batches("val", val_data))
                for key, value in self.task.evaluate(self.forward_model, batches).items():
                    out[f"val_{key}"] = value
        self.model.train(was_training)
        return out

    def _shown(self, name: str, batches: list[Any]) -> Any:
        """``batches`` with progress (a bar on a terminal, a line every few seconds in a log)."""
        enabled = None if self.config.progress and self.job.is_main else False
        desc = f"evaluating on {name} data"
        return progress(batches, desc=desc, unit="batches", enabled=enabled, leave=False)

    def sample(self) -> str | None:
        """The task's sample text (None when samples are off)."""
        if self.config.sample_tokens <= 0:
            return None
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.amp_dtype), warnings.catch_warnings():
            # A preview may run past a small context; its speed does not matter.
            warnings.simplefilter("ignore", ContextSlideWarning)
            text = self.task.sample(self.model)
        self.model.train(was_training)
        return text

    def save(self, state: TrainState, session_seconds: float) -> Path:
        """Save a checkpoint of ``state.step``. Every rank takes part (RNG states, FSDP's
        gathers); rank 0 writes the files; in one process the collectives are no-ops."""
        rng_ranks = self.job.all_gather_objects(st.capture_rng_state())
        full_model = self.job.full_model(self.model)
        opt_state = self.job.full_optimizer_state(self.model, self.optimizer)
        is_best = state.is_new_best()
        path = self.ckpt_root / st.step_dirname(state.step)
        if self.job.is_main:
            training_state = {
                **state.to_dict(),
                "optimizer": opt_state,
                "scheduler": {**self.schedule.state_dict(), "step": state.step},
                "rng": rng_ranks[0],
                "rng_ranks": rng_ranks,
                "world_size": self.job.world_size,
                "elapsed_s": state.elapsed_s + session_seconds,
                "seed": self.config.seed,
            }
            if is_best:
                training_state["best_val_loss"] = state.val_loss
                training_state["best_checkpoint"] = path.name
            ckpt_meta = {
                **(self.metadata or {}),
                "step": state.step,
                "tokens_seen": state.tokens_seen,
                "val_loss": state.val_loss,
            }
            path = st.save_training_checkpoint(
                self.ckpt_root, state.step, full_model, self.tokenizer, training_state,  # type: ignore[arg-type]
                self.run_config, metadata=ckpt_meta,
            )  # fmt: skip
            if is_best:
                st.set_best(self.ckpt_root, path)
            st.prune_checkpoints(self.ckpt_root, self.config.keep_last, self.config.keep_best)
        if is_best:
            state.best_val_loss, state.best_checkpoint = state.val_loss, path
        state.last_checkpoint = path
        self.job.barrier()  # a checkpoint is complete on disk before any rank moves on
        return path


@dataclass
class Session:
    """Time and work of this session (a resumed run counts from its restart)."""

    start: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0
    tokens: int = 0
    steps: int = 0

    def add_step(self, seconds: float, tokens: int) -> float:
        self.train_seconds += seconds
        self.tokens += tokens
        self.steps += 1
        return seconds

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def summary(self, status: str, state: TrainState) -> dict[str, Any]:
        """The run's closing numbers (printed, and returned in TrainResult.summary)."""
        speed = self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0
        return {
            "status": status,
            "steps": state.step,
            "session_steps": self.steps,
            "tokens_seen": state.tokens_seen,
            "session_tokens": self.tokens,
            "session_seconds": self.seconds(),
            "train_seconds": self.train_seconds,
            "tokens_per_s": speed,
            "val_loss": state.val_loss,
            "checkpoint": str(state.last_checkpoint) if state.last_checkpoint else None,
            "mfu": None,
        }
