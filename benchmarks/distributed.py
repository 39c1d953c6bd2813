"""Multi-process training throughput: 1 process against N processes under torchrun (DDP, FSDP2).

Every configuration trains the same small model on the same data with the same global batch
(1 process: grad_accum_steps = N; N processes: 1 micro-batch each), launched exactly as a user
would (`python -m torch.distributed.run --standalone --nproc_per_node=N -m scratchgpt pretrain`).
The cores are shared fairly: each of N processes gets cores / N torch threads. Throughput is the
median of the per-step tokens/s after the first steps (start-up, first allocations), read from
each run's metrics.jsonl; the final training loss shows the runs train the same model.

    python benchmarks/distributed.py             # 1 vs 2 CPU processes, DDP and FSDP
    python benchmarks/distributed.py --quick     # fewer steps
    python benchmarks/distributed.py --nproc 4 --device cuda   # on a machine with 4 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scratchgpt import __version__
from scratchgpt.training.logging import cpu_name


def run_one(
    out: Path, nproc: int, strategy: str, steps: int, args: argparse.Namespace
) -> dict[str, float]:
    threads = max(1, (os.cpu_count() or 1) // nproc) if args.device == "cpu" else 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "scratchgpt", "pretrain",
        "--out", str(out), "--overwrite",
        "--data", "the-verdict", "--tokenizer", args.tokenizer, "--model", "tiny",
        "--n-layers", str(args.n_layers), "--emb-dim", str(args.emb_dim), "--n-heads", "4",
        "--context-length", str(args.seq_len), "--max-length", str(args.seq_len),
        "--stride", str(args.seq_len // 2), "--drop-rate", "0",
        "--batch-size", str(args.batch_size), "--grad-accum-steps", str(args.nproc // nproc),
        "--max-steps", str(steps), "--eval-interval", "0", "--eval-batches", "1",
        "--sample-tokens", "0", "--precision", "fp32", "--device", args.device,
        "--strategy", strategy, "--no-progress", "--no-plot", "--peak-tflops", "1",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps_recs = [r for r in records if "train_loss" in r]
    steady = [r["tokens_per_s"] for r in steps_recs[args.skip :]] or [
        r["tokens_per_s"] for r in steps_recs
    ]
    return {
        "tokens_per_s": statistics.median(steady),
        "wall_s": wall,
        "final_loss": steps_recs[-1]["train_loss"],
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="processes of the multi-process runs")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="first steps left out of the median")
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--emb-dim", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="micro-batch per process")
    p.add_argument("--tokenizer", default="char")
    p.add_argument("--strategies", default="ddp,fsdp")
    p.add_argument("--quick", action="store_true", help="12 steps")
    args = p.parse_args(argv)
    steps = 12 if args.quick else args.steps
    args.skip = min(args.skip, steps // 2)
    global_batch = args.batch_size * args.nproc
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()}; python "
        f"{platform.python_version()}, torch {torch.__version__}, scratchgpt {__version__}\n"
        f"model: {args.n_layers} layers, emb {args.emb_dim}, context {args.seq_len}, "
        f"{args.tokenizer} tokenizer, The Verdict; global batch {global_batch} x {args.seq_len} "
        f"tokens; {steps} steps, median tokens/s after step {args.skip}; device {args.device}\n"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = run_one(Path(tmp) / "single", 1, "ddp", steps, args)
        rows.append(("1 process (reference)", 1, "-", base))
        for strategy in args.strategies.split(","):
            r = run_one(Path(tmp) / strategy, args.nproc, strategy, steps, args)
            rows.append((f"{args.nproc} processes", args.nproc, strategy, r))
    print("| run | strategy | threads/process | tokens/s | vs 1 process | wall (s) | final loss |")
    print("|---|---|---|---|---|---|---|")
    for name, _, strategy, r in rows:
        speed = r["tokens_per_s"] / base["tokens_per_s"]
        print(
            f"| {name} | {strategy} | {r['threads']} | {r['tokens_per_s']:,.0f} | {speed:.2f}x | "
            f"{r['wall_s']:.1f} | {r['final_loss']:.5f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
