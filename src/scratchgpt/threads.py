"""How many CPU threads torch uses: ``--threads N``, ``SCRATCHGPT_THREADS``, or a default that
does not collapse when other processes keep cores busy.

PyTorch starts one OpenMP thread per physical core. When another process holds one of those
cores, every parallel op waits at a barrier for the thread that shares a core with it, and the
waiting threads spin: on a 2-core machine with one core busy, char-small training ran 33x slower
with 2 threads than with 1. The default here counts only the cores that are not busy now
(benchmarks/threads.py measures the choices; docs/benchmarks.md has the table).

"Now" is measured, not averaged: on Linux the CPU time of this process's cores is sampled from
/proc/stat over a fifth of a second. The 1-minute load average (the fallback elsewhere) lags:
right after other work ends it still reads ~2 on an idle 2-core machine, and a command started
then would run on one thread for its whole life.
"""

from __future__ import annotations

import os
import time

from scratchgpt.errors import ConfigError

__all__ = ["ENV_VAR", "default_threads", "parse_threads", "resolve_threads", "set_threads"]

ENV_VAR = "SCRATCHGPT_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) CPU ticks of ``cpus`` from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            lines = f.readlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def busy_cores(seconds: float = 0.2) -> float:
    """How many of this process's cores other work keeps busy right now: their busy share of
    CPU time over ``seconds`` (Linux), else the 1-minute load average, else 0."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times(cpus)
        if after is not None and after[1] > before[1]:
            return len(cpus) * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return 0.0


def default_threads(
    cores: int | None = None, load: float | None = None, processes: int | None = None
) -> int:
    """The cores not busy right now, shared by the ``processes`` this launcher started on the
    machine: (usable cores - rounded busy cores) // processes, at least 1. ``cores``, ``load``
    (busy cores, :func:`busy_cores`) and ``processes`` (torchrun's LOCAL_WORLD_SIZE, else 1)
    default to this machine's."""
    if cores is None:
        cores = usable_cores()
    if load is None:
        load = busy_cores()
    if processes is None:
        try:
            processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            processes = 1
    return max(1, (cores - round(load)) // max(1, processes))


def parse_threads(value: object, source: str) -> int:
    """``value`` as a thread count >= 1; a :class:`ConfigError` naming ``source`` otherwise."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(
            f"{source}: {value!r} is not a thread count; give a whole number of threads >= 1"
        )
    return n


def resolve_threads(threads: int | None = None) -> int:
    """``threads`` when given, else ``SCRATCHGPT_THREADS`` when set, else ``OMP_NUM_THREADS``
    when set (a launcher's choice: torchrun sets 1 per process), else :func:`default_threads`."""
    if threads is not None:
        return parse_threads(threads, "threads")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return parse_threads(env, ENV_VAR)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:  # OpenMP's other forms ("4,2") are left to OpenMP
        return int(omp)
    return default_threads()


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (else ``SCRATCHGPT_THREADS``, else the cores
    not busy now) and return the number set. The CLI calls it before every command."""
    import torch

    n = resolve_threads(threads)
    # Inter-op threads (TorchScript's fork/join) are left alone: torch allows setting them once,
    # before any parallel work, and the CLI's work does not use them.
    torch.set_num_threads(n)
    return n
