"""Multi-process training on PyTorch's own engine (torch.distributed): DDP and FSDP2.

The training loop sees the job through one object (``training.job.for_job``): a torchrun job
(``WORLD_SIZE`` > 1) calls these helpers, a single process gets a no-op twin and never touches
torch.distributed. ``print0`` is the one way to print on rank 0. The scheme:

- **Process group** from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``): gloo on CPU, ``cpu:gloo,cuda:nccl`` where CUDA exists, so a
  ``--device cpu`` run on a GPU machine still works. Each rank uses ``cuda:LOCAL_RANK``.
- **Data order.** Every rank draws the same per-epoch permutation and cuts it into the same
  micro-batches; rank r takes micro-batches r, r+W, r+2W, ... So the ranks read disjoint parts
  of the data, no window twice per epoch, and one optimizer step consumes exactly the
  micro-batches that a single process with ``W x grad_accum_steps`` accumulation steps would:
  the global batch is ``ranks x batch_size x grad_accum_steps``.
- **DDP** averages gradients over ranks (``no_sync`` on all but the last micro-batch of a step);
  **FSDP2** (``fully_shard`` per transformer block, then the whole model) shards parameters,
  gradients and optimizer state.
- **Checkpoints** are always full, unsharded tensors in the single-process format, written by
  rank 0 (FSDP gathers them first), so any number of ranks, or one process, can load them.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
from torch import nn

from scratchgpt.errors import ConfigError, ScratchGPTError

STRATEGIES = ("ddp", "fsdp")
T = TypeVar("T")


class DistributedError(ScratchGPTError):
    """A rank failed or lost contact with the others."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer; launch with torchrun, "
            "which sets RANK, WORLD_SIZE and LOCAL_RANK"
        ) from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={value} must be >= 0")
    return value


def context_from_env() -> DistContext:
    """The rank, world size and local rank that torchrun put in the environment."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or rank >= world:
        raise ConfigError(
            f"RANK={rank} does not fit WORLD_SIZE={world}: launch with torchrun "
            "(torchrun --nproc_per_node=N -m scratchgpt pretrain ...)"
        )
    return DistContext(rank=rank, world_size=world, local_rank=local)


def current() -> DistContext:
    """The context of the initialised process group (or of the environment if none is)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        env = context_from_env()
        return DistContext(dist.get_rank(), dist.get_world_size(), env.local_rank)
    return context_from_env()


def init_distributed(timeout_s: float | None = None) -> DistContext:
    """Join torchrun's process group (once; later calls return the same context).

    Without torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised. The backend follows the
    hardware: gloo on CPU-only machines, gloo for CPU tensors and NCCL for CUDA tensors otherwise.
    """
    import torch.distributed as dist

    ctx = context_from_env()
    if not ctx.enabled:
        return ctx
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; cannot run under torchrun")
    if dist.is_initialized():
        return current()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())
    if timeout_s is None:
        timeout_s = float(os.environ.get("SCRATCHGPT_DIST_TIMEOUT", 1800))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(_destroy)
    return current()


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this process with ``code`` (the entry point torchrun runs calls this).

    A failure, or a process that never joined a process group, exits normally. A torchrun rank
    that succeeded runs the exit handlers (``_destroy`` among them) and then ends at once with
    ``os._exit``, skipping the interpreter's and the C++ runtime's teardown.
    ``destroy_process_group`` cannot free the gloo backend, so its worker and socket threads
    keep running: ``torch.distributed.nn.functional`` (imported by DDP and FSDP through
    ``torch._dynamo``) holds the group in default arguments, and FSDP's DTensor specs hold it
    through their device mesh. Tearing the runtime down under those threads made a rank that
    had finished its work abort under load ("terminate called without an active exception"),
    so a successful job exited non-zero."""
    import torch.distributed as dist

    # A failing rank keeps the ordinary exit: its code is non-zero anyway, and exiting at once
    # could let torchrun see it fail before the peer whose death caused it.
    if code != 0 or not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to save
            stream.flush()
    os._exit(code)


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that prints and writes files."""
    return context_from_env().is_main


def print0(*args: Any, writer: Callable[[str], None] | None = None, **kwargs: Any) -> None:
    """``print`` on rank 0 only (a single process is rank 0): under torchrun, rank 0 speaks for
    the job. ``writer`` (a progress bar's ``write``, a caller's log function) replaces ``print``
    and gets the arguments joined by spaces."""
    if not is_main_process():
        return
    if writer is None:
        print(*args, **kwargs)
    else:
        writer(" ".join(str(a) for a in args))


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """Under torchrun every rank owns one GPU: ``cuda`` (any index) becomes ``cuda:LOCAL_RANK``."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and share its result; if it raises, every rank raises the same
    kind of error with the same message (so no rank is left waiting for the others)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # shared below, then re-raised on rank 0 unchanged
            error = e
            box[0] = ("error", type(e).__name__, str(e))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0][0] == "error":
        kinds: dict[str, type[Exception]] = {
            "FileExistsError": FileExistsError,
            "ConfigError": ConfigError,
        }
        raise kinds.get(box[0][1], ScratchGPTError)(box[0][2])
    return box[0][1]


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"train.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    return strategy


def wrap_model(
    model: nn.Module, strategy: str, device: torch.device, ctx: DistContext
) -> nn.Module:
    """DDP: a wrapper that averages gradients. FSDP: ``fully_shard`` every transformer block and
    then the whole model, in place (the returned module is ``model`` itself)."""
    check_strategy(strategy)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # The only buffer is the constant causal mask: nothing to broadcast each forward.
        try:
            return DDP(model, device_ids=ids, forward_sync_buffers=False)
        except TypeError:  # PyTorch before the argument's rename
            return DDP(model, device_ids=ids, broadcast_buffers=False)
    from torch.distributed.fsdp import fully_shard

    from scratchgpt.model.lora import has_lora

    if has_lora(model):
        raise ConfigError(
            "LoRA with --strategy fsdp is not supported (its adapters are saved from the whole "
            "model); use --strategy ddp: LoRA's few trainable parameters need no sharding"
        )
    from torch.distributed.device_mesh import init_device_mesh

    # The mesh must follow the training device: fully_shard's default mesh is CUDA whenever a
    # GPU exists, which breaks `--device cpu` runs on GPU machines (NCCL, one GPU, two ranks).
    mesh = init_device_mesh(device.type, (ctx.world_size,))
    for block in getattr(model, "trf_blocks", []):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def skeleton_of(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s structure with storage-free (meta) tensors: rank 0 fills it with the
    gathered full state dict to write an ordinary checkpoint from a sharded model."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def gather_full_model(model: nn.Module, skeleton: nn.Module, ctx: DistContext) -> nn.Module | None:
    """Collective: the full (unsharded, CPU) weights of an FSDP model, loaded into ``skeleton``
    on rank 0 (None on the other ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not ctx.is_main:
        return None
    skeleton.load_state_dict(sd, strict=False, assign=True)
    return skeleton


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its own order (the integer keys of a plain
    ``optimizer.state_dict()``)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for g in optimizer.param_groups for p in g["params"]]


def gather_full_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any] | None:
    """Collective: an FSDP optimizer's full state in the plain single-process layout (integer
    keys in parameter order), on rank 0; None elsewhere."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    sd = get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not ctx.is_main:
        return None
    names = _param_names(model, optimizer)
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: value for name, value in sd["state"].items()}
    groups = []
    for g in sd["param_groups"]:
        groups.append({**g, "params": [index[name] for name in g["params"]]})
    return {"state": state, "param_groups": groups}


def load_full_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, plain: dict[str, Any]
) -> None:
    """Load a plain (single-process layout) optimizer state into an FSDP model's optimizer;
    every rank keeps only its shard."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = _param_names(model, optimizer)
    state = {names[int(i)]: value for i, value in plain["state"].items()}
    groups = [{**g, "params": [names[int(i)] for i in g["params"]]} for g in plain["param_groups"]]
    set_optimizer_state_dict(
        model,
        optimizer,
        optim_state_dict={"state": state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True),
    )


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over ranks (float64, one collective)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (small objects only: RNG states)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def full_norm(norm: torch.Tensor) -> float:
    """The gradient norm as a number; FSDP's clip_grad_norm_ returns a (replicated) DTensor."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


def is_comm_failure(exc: BaseException) -> bool:
    """Whether an exception is a lost peer (a dead rank), not a bug of this rank."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    markers = ("connection closed", "connection reset", "gloo", "nccl", "broken pipe", "timed out")
    return isinstance(exc, RuntimeError) and any(m in text for m in markers)


def lost_peer_message(ctx: DistContext, step: int, last_checkpoint: Any, exc: BaseException) -> str:
    where = (
        f"the last complete checkpoint is {last_checkpoint}"
        if last_checkpoint is not None
        else "no checkpoint had been saved yet"
    )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"rank {ctx.rank} of {ctx.world_size}: lost contact with the other ranks during step "
        f"{step} ({first_line[:200]}); another rank has probably died (torchrun's summary names "
        f"it). {where}; fix the cause and rerun the same command with --resume."
    )
