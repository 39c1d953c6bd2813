"""Threads on a busy machine: char-small training and gpt2-small generation speed by torch thread
count, on an idle machine and with one core kept busy by another process.

PyTorch's CPU ops use one OpenMP thread per physical core by default. When another process takes
one of those cores, every parallel op ends at a barrier that waits for the thread sharing a core
with it; libgomp's threads spin while they wait, so the waiting costs a whole time slice. This
benchmark measures how much that costs and which default avoids it.

Rows (thread settings), each timed in a fresh subprocess so that the environment is read by
OpenMP at torch's import:
- 1 and 2 threads (torch.set_num_threads);
- 2 threads with OMP_WAIT_POLICY=passive (waiting threads sleep instead of spinning);
- auto: what the scratchgpt CLI picks when neither --threads nor SCRATCHGPT_THREADS is given
  (``scratchgpt.threads.default_threads()``: the cores not busy right now).

Conditions: idle (no process of ours besides the worker; other jobs on the machine are not under
our control, so the load average is printed) and busy (one `while True: pass` process started by
this script for the whole condition). Training: ``--train-steps`` AdamW steps of the char-small
model (batch 12 x 64 tokens) after 3 warm-up steps; generation: greedy KV-cache decoding of
``--new-tokens`` tokens with gpt2-small (random weights, weights laid out as `scratchgpt generate`
lays them out). Each cell is the median tokens/s of ``--repeats`` worker runs; "vs 1 thread" is
the ratio to the 1-thread row of the same condition.

    python benchmarks/threads.py [--quick] [--repeats 3] [--train-steps 30] [--new-tokens 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

# Python puts this folder first on sys.path, where benchmarks/tokenizers.py would shadow the
# `tokenizers` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

SETTINGS = {
    "1 thread": ({}, "1"),
    "2 threads": ({}, "2"),
    "2 threads, OMP_WAIT_POLICY=passive": ({"OMP_WAIT_POLICY": "passive"}, "2"),
    "auto (scratchgpt default)": ({}, "auto"),
}


def worker(kind: str, threads: str, steps: int, new_tokens: int) -> None:
    """Run in a subprocess: print {"tokens_per_s": ..., "threads": ...} as one JSON line."""
    import torch

    from scratchgpt.threads import default_threads

    n = default_threads() if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    tok_s = _train(steps) if kind == "train" else _generate(new_tokens)
    print(json.dumps({"tokens_per_s": tok_s, "threads": n}))


def _train(steps: int) -> float:
    import torch
    import torch.nn.functional as F

    from scratchgpt.data.sources import load_text
    from scratchgpt.model import GPTModel
    from scratchgpt.tasks.pretrain import make_tokenizer, resolve_model_config
    from scratchgpt.training.config import RunConfig

    run = RunConfig.preset("char-small")
    tok = make_tokenizer(run.data.tokenizer, load_text(run.data.source))
    cfg = resolve_model_config(run, tok)
    torch.manual_seed(0)
    model = GPTModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    b, t = run.train.batch_size, run.data.max_length
    x = torch.randint(0, cfg.vocab_size, (b, t))
    y = torch.randint(0, cfg.vocab_size, (b, t))
    warm = 3
    for i in range(warm + steps):
        if i == warm:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
    return steps * b * t / (time.perf_counter() - t0)


def _generate(new_tokens: int) -> float:
    import torch

    from scratchgpt.config import GPTConfig
    from scratchgpt.generation import generate, optimize_for_decoding
    from scratchgpt.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig.from_preset("gpt2-small", context_length=256, drop_rate=0.0)
    model = optimize_for_decoding(GPTModel(cfg).eval())
    prompt = torch.randint(0, cfg.vocab_size, (1, 20))
    generate(model, prompt, max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    generate(model, prompt, max_new_tokens=new_tokens)
    return new_tokens / (time.perf_counter() - t0)


def measure(kind: str, name: str, args: argparse.Namespace) -> tuple[float, int]:
    """Median tokens/s over ``args.repeats`` worker runs, and the thread count used."""
    env_extra, threads = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--worker-threads", threads]
    cmd += ["--train-steps", str(args.train_steps), "--new-tokens", str(args.new_tokens)]
    speeds, used = [], 0
    for _ in range(args.repeats):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        speeds.append(result["tokens_per_s"])
        used = result["threads"]
    return statistics.median(speeds), used


def rate(tok_s: float) -> str:
    return f"{tok_s:,.0f}" if tok_s >= 100 else f"{tok_s:.3g}"


def run_condition(busy: bool, args: argparse.Namespace) -> list[tuple]:
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(2.0)  # let the scheduler see it before the first worker starts
    rows = []
    try:
        load_before = os.getloadavg()[0]
        for kind in ("train", "generate"):
            base = None
            for name in SETTINGS:
                tok_s, used = measure(kind, name, args)
                base = base or tok_s
                rows.append(("busy" if busy else "idle", kind, name, used, tok_s, tok_s / base))
                print(
                    f"  {rows[-1][0]:<4} {kind:<8} {name:<36} {rate(tok_s):>9} tokens/s",
                    file=sys.stderr,
                )
        load_after = os.getloadavg()[0]
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    print(
        f"  load average (1 min) {'busy' if busy else 'idle'}: {load_before:.2f} before, "
        f"{load_after:.2f} after",
        file=sys.stderr,
    )
    return [(*r, load_before, load_after) for r in rows]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=3, help="worker runs per cell (median)")
    p.add_argument("--train-steps", type=int, default=30, help="timed training steps")
    p.add_argument("--new-tokens", type=int, default=40, help="generated tokens")
    p.add_argument("--quick", action="store_true", help="1 repeat, 10 steps, 10 tokens")
    p.add_argument("--worker", choices=["train", "generate"], help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.worker_threads, args.train_steps, args.new_tokens)
        return 0
    if args.quick:
        args.repeats, args.train_steps, args.new_tokens = 1, 10, 10
    # A SIGTERM unwinds like Ctrl-C, so the busy process is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    from scratchgpt import __version__
    from scratchgpt.training.logging import cpu_name

    rows = run_condition(False, args) + run_condition(True, args)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cpu_name()}, {cores} cores usable, torch default {torch.get_num_threads()} threads"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, scratchgpt {__version__}"
    )
    print(
        f"char-small training: {args.train_steps} steps (batch 12 x 64); gpt2-small generation: "
        f"{args.new_tokens} new tokens after 20; median of {args.repeats} runs per cell"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}\n")
    header = (
        f"| {'machine':<7} | {'work':<8} | {'threads':<36} | {'n':>2} | {'tokens/s':>9} | "
        f"{'vs 1 thread':>11} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for cond, kind, name, used, tok_s, ratio, _lb, _la in rows:
        label = "idle" if cond == "idle" else "1 busy"
        print(
            f"| {label:<7} | {kind:<8} | {name:<36} | {used:>2} | {rate(tok_s):>9} | {ratio:>10.2f}x |"
        )
    loads = {r[0]: (r[6], r[7]) for r in rows}
    print(
        "\nload average (1 min) before/after each condition: "
        + ", ".join(f"{c} {a:.2f}/{b:.2f}" for c, (a, b) in loads.items())
        + " (other jobs on the machine count too)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
