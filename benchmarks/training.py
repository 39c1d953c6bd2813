"""Training throughput: scratchgpt's loop against a plain PyTorch loop on the same model.

One run, one table. The reference is the book's ``train_model_simple`` inner loop reduced to its
core (forward, cross-entropy, backward, AdamW step, zero_grad) with no logging, checkpoints,
clipping or evaluation: the floor our loop's overhead is measured against. The machine's matmul
peak (a large ``torch.mm``) is measured in the same run, so MFU = achieved FLOP/s / that peak, with
achieved FLOP/s = tokens/s x training FLOPs per token (``model_stats``, 6N plus attention).

    python benchmarks/training.py                 # GPT-2 small, context 256, batch 2 (the book's ch. 5)
    python benchmarks/training.py --quick         # a small model, a few steps
    python benchmarks/training.py --device cuda --model gpt2-small --batch-size 16 --seq-len 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchgpt import __version__
from scratchgpt.config import GPTConfig
from scratchgpt.data.pretraining import SlidingWindowDataset
from scratchgpt.data.sources import load_text
from scratchgpt.model import GPTModel, model_stats
from scratchgpt.tasks.pretrain import PretrainTask, make_tokenizer, resolve_model_config
from scratchgpt.training.config import RunConfig, TrainConfig
from scratchgpt.training.logging import cpu_name, read_metrics
from scratchgpt.training.loop import train
from scratchgpt.training.perf import measure_matmul_tflops
from scratchgpt.training.run_dir import prepare_run_dir
from scratchgpt.training.setup import resolve_precision


def random_data(vocab: int, seq_len: int, windows: int, seed: int = 0) -> SlidingWindowDataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (seq_len * windows + 1,), generator=g)
    return SlidingWindowDataset(ids, max_length=seq_len, stride=seq_len)


@dataclass
class Workload:
    name: str
    cfg: GPTConfig
    batch_size: int
    seq_len: int
    steps: int


def char_small_workload(steps: int) -> Workload:
    """The `char-small` training preset's model and batch, resolved as `pretrain` resolves it."""
    run = RunConfig.preset("char-small")
    tok = make_tokenizer(run.data.tokenizer, load_text(run.data.source))
    return Workload(
        "char-small",
        resolve_model_config(run, tok),
        run.train.batch_size,
        run.data.max_length,
        steps,
    )


def reference_loop(
    w: Workload, data, args, device: torch.device, fused: bool | None = None
) -> list[float]:
    """Per-step seconds of the plain loop (fp32); ``fused`` picks AdamW's fused kernel."""
    torch.manual_seed(args.seed)
    model = GPTModel(w.cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=fused)
    loader = torch.utils.data.DataLoader(
        data, batch_size=w.batch_size, shuffle=True, drop_last=True
    )
    times = []
    it = iter(loader)
    for _ in range(w.steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        t0 = time.perf_counter()
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the loop reads the loss too (a device sync)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def our_loop(w: Workload, data, args, precision: str, compile: bool) -> list[float]:
    """Per-step seconds of scratchgpt's loop, from the tokens/s it logs for every step."""
    torch.manual_seed(args.seed)
    model = GPTModel(w.cfg)
    tc = TrainConfig(
        seed=args.seed,
        device=args.device,
        precision=precision,
        compile=compile,
        batch_size=w.batch_size,
        max_steps=w.steps,
        eval_interval=0,
        eval_batches=1,
        sample_tokens=0,
        grad_clip=1.0,
        progress=False,
        plot=False,
        peak_tflops=1.0,  # MFU is computed here, against the measured peak
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run_dir(Path(tmp) / "run")
        train(model, PretrainTask(), data, None, tc, run, log=lambda _msg: None)
        records = read_metrics(run / "metrics.jsonl")
    tokens = w.batch_size * w.seq_len
    return [tokens / r["tokens_per_s"] for r in records if r.get("tokens_per_s")]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="gpt2-small", help="model preset (default gpt2-small)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument(
        "--steps", type=int, default=8, help="timed steps per variant (first 2 are warm-up)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--quick", action="store_true", help="a small model and few steps")
    p.add_argument("--no-char-small", action="store_true", help="skip the char-small rows")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.model, args.steps, args.seq_len = "mini", 6, 128
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = GPTConfig.from_preset(args.model, context_length=args.seq_len, drop_rate=0.1)
    workloads = [Workload(args.model, cfg, args.batch_size, args.seq_len, args.steps)]
    if not args.no_char_small:
        # A step of the small model takes milliseconds: time more of them.
        workloads.append(char_small_workload(max(args.steps, 60)))
    warm = 2

    peak_fp32 = measure_matmul_tflops(device, torch.float32, seconds=1.0)
    bf16_ok = resolve_precision("auto", device) is not None
    peak_bf16 = measure_matmul_tflops(device, torch.bfloat16, seconds=1.0) if bf16_ok else None

    rows = []  # (model, variant, s/step, tokens/s, TFLOP/s, peak, reference tokens/s)
    for w in workloads:
        data = random_data(w.cfg.vocab_size, w.seq_len, windows=max(64, w.batch_size * 8))
        flops_per_token = model_stats(w.cfg).train_flops_per_token
        first = len(rows)

        def add(
            variant: str, times: list[float], peak: float, w=w, fpt=flops_per_token, first=first
        ) -> None:
            med = statistics.median(times[warm:] if len(times) > warm else times)
            tok_s = w.batch_size * w.seq_len / med
            ref = rows[first][3] if len(rows) > first else tok_s
            rows.append((w.name, variant, med, tok_s, tok_s * fpt / 1e12, peak, ref))

        add("reference loop, fp32", reference_loop(w, data, args, device), peak_fp32)
        add("reference + fused AdamW, fp32", reference_loop(w, data, args, device, True), peak_fp32)
        add("scratchgpt, fp32", our_loop(w, data, args, "fp32", False), peak_fp32)
        if bf16_ok:
            add("scratchgpt, bf16 autocast", our_loop(w, data, args, "bf16", False), peak_bf16)
        if args.compile:
            add("scratchgpt, fp32 + compile", our_loop(w, data, args, "fp32", True), peak_fp32)

    for w in workloads:
        print(
            f"model {w.name} ({model_stats(w.cfg).total_params / 1e6:.1f}M params), batch "
            f"{w.batch_size} x {w.seq_len} tokens, {model_stats(w.cfg).train_flops_per_token / 1e9:.3f} "
            "GFLOP/token"
        )
    print(
        f"steps per row: {', '.join(f'{w.name} {w.steps}' for w in workloads)}; median after {warm} warm-up steps"
    )
    print(
        f"device {device} ({cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
        f"{torch.get_num_threads()} threads; measured matmul peak: fp32 {peak_fp32:.2f} TFLOP/s"
        + (f", bf16 {peak_bf16:.2f} TFLOP/s" if peak_bf16 else "")
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, scratchgpt {__version__}"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}\n")
    header = f"| {'model':<10} | {'variant':<30} | {'s/step':>7} | {'tokens/s':>9} | {'vs reference':>12} | {'TFLOP/s':>7} | {'MFU':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for model, name, med, tok_s, tflops, peak, ref_tok_s in rows:
        print(
            f"| {model:<10} | {name:<30} | {med:>7.3f} | {tok_s:>9,.0f} | {tok_s / ref_tok_s:>11.2f}x | "
            f"{tflops:>7.3f} | {tflops / peak * 100:>5.1f}% |"
        )
    print("\nMFU is against the measured matmul peak of the row's precision.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
