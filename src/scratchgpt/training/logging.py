"""Run logs: ``run.json`` (versions, machine, config, command), ``metrics.jsonl``, optional
TensorBoard, the progress bar and the end-of-run summary.

``metrics.jsonl`` holds one JSON object per logged step: ``step`` (optimizer steps done),
``epoch``, ``tokens_seen``, ``lr``, ``train_loss`` (the step's mean micro-batch loss), and at
evaluation steps ``val_loss``, ``val_ppl`` and ``eval_train_loss`` (the loss over a fixed set of
training batches in eval mode, the book's "train loss" curve). Samples go in a ``sample`` field.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from scratchgpt import __version__
from scratchgpt.fileio import (
    PathLike,
    atomic_write_json,
    atomic_write_text,
    output_error,
    output_errors,
    read_json,
)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What ran the job: OS, CPU, cores, threads, GPUs."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_devices": [],
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    return info


def versions() -> dict[str, str]:
    import numpy
    import torch

    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scratchgpt": __version__,
    }
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


def write_run_json(
    run_dir: PathLike,
    config: dict[str, Any],
    *,
    argv: list[str] | None = None,
    extra: dict | None = None,
) -> Path:
    """Start (or, on resume, extend) ``run.json``: versions, machine, full config, command line."""
    path = Path(run_dir) / RUN_FILE
    entry = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv if argv is None else argv),
        "versions": versions(),
        "machine": machine_info(),
    }
    if path.is_file():
        run = read_json(path)
        run.setdefault("resumes", []).append({**entry, **(extra or {})})
        run["config"] = config
    else:
        run = {**entry, "config": config, **(extra or {})}
    return atomic_write_json(path, run)


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line, from a crash, is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    records = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec:
                records.append(rec)
    return records


def truncate_metrics(path: PathLike, last_step: int) -> int:
    """Keep only records up to ``last_step`` (what a resumed run continues from); returns how
    many records were dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    records = read_metrics(p)
    kept = [r for r in records if r["step"] <= last_step]
    atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


class MetricsLogger:
    """Appends records to metrics.jsonl (one unbuffered write per line) and, if asked, to
    TensorBoard.

    A record that does not fit on the disk is cut off again, so the file keeps whole lines
    only, and the failure is one OutputError.
    """

    def __init__(self, run_dir: PathLike, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._last_step: int | None = None
        with output_errors(self.path):
            self._f: Any = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard logging was requested but the tensorboard package is not "
                    "installed (pip install tensorboard); logging to metrics.jsonl only",
                    stacklevel=2,
                )
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        self._append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._last_step = record.get("step", self._last_step)
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if (
                    key != "step"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self._tb.add_scalar(key, value, step)
            if "sample" in record:
                self._tb.add_text("sample", record["sample"], step)

    def _append(self, data: bytes) -> None:
        start = None
        try:
            start = self._f.seek(0, os.SEEK_END)
            view = memoryview(data)
            while view:
                n = self._f.write(view)
                if not n:  # a regular file that takes nothing is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                view = view[n:]
        except OSError as e:
            if start is not None:
                with contextlib.suppress(OSError):
                    self._f.truncate(start)  # no torn line for the next append to glue onto
            kept = (
                f"the log keeps its records up to step {self._last_step}"
                if self._last_step is not None
                else "the records already in it are kept"
            )
            err = output_error(e, self.path, note=kept)
            if err is None:
                raise
            raise err from e

    def close(self) -> None:
        with contextlib.suppress(OSError):  # unbuffered: nothing is left to write
            self._f.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A tqdm bar over optimizer steps (loss, tokens/s, ETA); messages print above it."""

    def __init__(self, total: int | None, initial: int, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def update(self, loss: float, tokens_per_s: float, lr: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}", refresh=False
            )
            self._bar.update(1)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The end-of-run summary as aligned lines."""
    lines = [
        ("status", summary.get("status", "")),
        ("steps", f"{summary['steps']:,} (this session: {summary['session_steps']:,})"),
        ("tokens seen", f"{summary['tokens_seen']:,}"),
        ("time", f"{summary['session_seconds']:.1f} s"),
        ("throughput", f"{summary['tokens_per_s']:,.0f} tokens/s"),
    ]
    if summary.get("peak_unreliable"):
        lines.append(
            (
                "MFU",
                f"not shown: the {summary['peak_source']} peak ({summary['peak_tflops']:.2f} "
                f"TFLOP/s) is below the {summary['achieved_tflops']:.2f} TFLOP/s training "
                "reached, so it is unreliable (other work was using the device while it was "
                "measured)",
            )
        )
    elif summary.get("mfu") is not None:
        lines.append(
            (
                "MFU",
                f"{summary['mfu'] * 100:.1f}% of {summary['peak_tflops']:.2f} TFLOP/s "
                f"({summary['peak_source']})",
            )
        )
    if summary.get("val_loss") is not None:
        lines.append(("val loss", f"{summary['val_loss']:.4f}"))
    if summary.get("checkpoint"):
        lines.append(("checkpoint", str(summary["checkpoint"])))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


# Printed at the start of a run with step_labels "book".
BOOK_STEPS_NOTE = (
    "book step labels: evaluation lines count steps as the book's code does, 'Step 000000' "
    "after the first update, 'Step N' after N + 1 (metrics.jsonl's step counts updates done). "
    "The data order comes from a private generator per epoch, not the global RNG as in the "
    "book's DataLoader, so shuffled batches and dropout masks differ from the book's run."
)


def eval_line(step: int, epoch: int, metrics: dict[str, float], *, book: bool = False) -> str:
    """The book's evaluation line: ``Ep 1 (Step 000005): Train loss 9.812, Val loss 9.933``.

    ``step`` is the number of updates done; ``book`` labels it as the book's ``global_step``
    (one less: its "Step 000000" follows the first update), and step 0 as "untrained"."""
    label = f"Step {step:06d}"
    if book:
        label = f"Step {step - 1:06d}" if step > 0 else "untrained"
    parts = [f"Ep {epoch} ({label}):"]
    if "eval_train_loss" in metrics:
        parts.append(f"Train loss {metrics['eval_train_loss']:.3f},")
    if "val_loss" in metrics:
        parts.append(f"Val loss {metrics['val_loss']:.3f}")
    # Tasks with an accuracy metric (classification) show it too, as the book prints it.
    for key, label in (("eval_train_accuracy", "Train acc"), ("val_accuracy", "Val acc")):
        if key in metrics:
            parts[-1] = parts[-1].rstrip(",") + ","
            parts.append(f"{label} {metrics[key] * 100:.2f}%")
    # Preference tuning shows its reward margins, as the book's DPO notebook prints them.
    for key, label in (
        ("eval_train_reward_margin", "Train reward margins"),
        ("val_reward_margin", "Val reward margins"),
    ):
        if key in metrics:
            parts[-1] = parts[-1].rstrip(",") + ","
            parts.append(f"{label} {metrics[key]:.3f}")
    return " ".join(parts).rstrip(",")


class NoLog:
    """The metrics logger of ranks other than 0: logs nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
