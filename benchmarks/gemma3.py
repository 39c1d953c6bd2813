"""Gemma 3: decode speed and the KV cache's memory at long contexts, measured in one run against
transformers.

Model: a ``gemma3-270m``-shaped model (268M parameters, 18 layers of which 15 are local with a
512-token window, one key/value head of width 256) with random weights, made by transformers'
``Gemma3ForCausalLM``, saved as a Hugging Face folder and loaded into ours with
``scratchgpt.weights.load_model`` (what every command runs); the logits of both are checked to
agree first.

Tables:
- decode at fp32 and bf16: batch-1 greedy generation of ``--new-tokens`` tokens after a
  ``--prompt-tokens``-token random prompt, KV cache on both sides (ours prepared by
  ``optimize_for_decoding`` as ``scratchgpt generate`` does); tokens/s over the call. Ours and
  transformers run alternately and each reports its median of ``--repeats``;
- the KV cache after prompts of growing length (``--contexts``), fp32: the bytes held by
  ours (``KVCache.nbytes``: global layers grow, local layers keep a ring of 512 positions), by
  transformers' cache after the same prompt (its tensors' bytes), and by a cache that keeps every
  position in every layer (what the model would need without windows); plus the time of one
  decode step at that context, ours and transformers (the prompt prefilled into each one's
  cache, untimed, then 16 single-token forward passes timed; median of ``--repeats``).

    python benchmarks/gemma3.py [--quick] [--new-tokens 64] [--prompt-tokens 16]
        [--contexts 128,1024,4096] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.model import KVCache, kv_cache_bytes  # noqa: E402

# The measuring helpers of the Llama/Qwen3 benchmark (bandwidth, alternating runs, HF generate).
_spec = importlib.util.spec_from_file_location("families_bench", os.path.join(_HERE, "families.py"))
families = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(families)

PRESET = "gemma3-270m"


def make_models(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers Gemma3ForCausalLM, ours) with the same random fp32 weights."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from scratchgpt.weights import load_model
    from scratchgpt.weights.hf.gemma import hf_config_from_ours

    hf_cfg = hf_config_from_ours(GPTConfig.from_preset(PRESET))
    hf_cfg.pop("architectures")
    hf_cfg.pop("model_type")
    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(Gemma3TextConfig(**hf_cfg)).eval()
    with torch.no_grad():  # norm weights away from 0, so a mix-up would show in the logits
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)
    hf.save_pretrained(folder)
    return hf, load_model(folder, dtype=torch.float32).model


def hf_cache_bytes(hf: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the key/value tensors transformers' cache holds after prefilling ``ids``."""
    with torch.inference_mode():
        cache = hf(ids, use_cache=True).cache
    total = 0
    for layer in cache.layers:
        total += sum(t.nbytes for t in (layer.keys, layer.values) if t is not None)
    return total


def step_ms(prefill, step, repeats: int, steps: int = 16) -> float:
    """Milliseconds of one decode step after a prompt: ``prefill()`` (untimed) returns the
    state ``step(state, i)`` advances by one token; median over ``repeats`` prefills of the mean
    over ``steps`` steps."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        state = prefill()
        t0 = time.perf_counter()
        for i in range(steps):
            state = step(state, i)
        times.append((time.perf_counter() - t0) / steps)
    return 1e3 * statistics.median(times[1:])


def ours_steps(model, ids: torch.Tensor):
    """(prefill, step) for ours: the prompt into a fresh KVCache, then one token per step."""

    def prefill():
        cache = KVCache.for_model(model, 1, max_len=ids.shape[1] + 64)
        with torch.inference_mode():
            model(ids, kv_cache=cache, last_token_only=True)
        return cache

    def step(cache, i):
        with torch.inference_mode():
            model(ids[:, i : i + 1], kv_cache=cache, last_token_only=True)
        return cache

    return prefill, step


def hf_steps(hf, ids: torch.Tensor):
    """(prefill, step) for transformers: the prompt into its cache, then one token per step."""

    def prefill():
        with torch.inference_mode():
            return hf(ids, use_cache=True, logits_to_keep=1).cache

    def step(cache, i):
        with torch.inference_mode():
            return hf(ids[:, i : i + 1], cache=cache, use_cache=True).cache

    return prefill, step


def decode_rows(hf, ours, folder: Path, args) -> list[tuple]:
    from scratchgpt.generation import generate, optimize_for_decoding
    from scratchgpt.weights import load_model

    rows, new = [], args.new_tokens
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, ours.cfg.vocab_size, (1, args.prompt_tokens), generator=g)
    for name in ("fp32", "bf16"):
        if name == "bf16":
            hf.to(torch.bfloat16)
            ours = load_model(folder, dtype=torch.bfloat16).model
        fast = optimize_for_decoding(ours)
        shared = families.same_prefix(
            generate(fast, prompt, new), families.hf_generate(hf, prompt, new), prompt.shape[1]
        )
        print(f"{name}: ours and transformers generate the same first {shared} of {new} tokens")
        t = families.alternate(
            {"ours": lambda f=fast: generate(f, prompt, new),
             "hf": lambda: families.hf_generate(hf, prompt, new)},
            args.repeats,
        )  # fmt: skip
        rows.append((name, new / t["ours"], new / t["hf"]))
    hf.to(torch.float32)
    return rows


def context_rows(hf, ours, args) -> list[tuple]:
    from scratchgpt.generation import optimize_for_decoding

    cfg = ours.cfg
    full = cfg.replace(sliding_window=None, layer_types=())  # every layer keeps every position
    fast = optimize_for_decoding(ours)
    rows = []
    for n in args.contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
        cache = KVCache.for_model(ours, 1, max_len=n)
        ms_ours = step_ms(*ours_steps(fast, ids), args.repeats)
        ms_hf = step_ms(*hf_steps(hf, ids), args.repeats)
        rows.append(
            (n, cache.nbytes, hf_cache_bytes(hf, ids), kv_cache_bytes(full, n, 4), ms_ours, ms_hf)
        )
        print(f"context {n}: done")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens, contexts and repeats")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 64 (16 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--contexts", default=None, help="default 128,1024,4096 (128,1024 --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.new_tokens = args.new_tokens or (16 if args.quick else 64)
    args.contexts = [
        int(c)
        for c in (args.contexts or ("128,1024" if args.quick else "128,1024,4096")).split(",")
    ]
    args.repeats = args.repeats or (1 if args.quick else 3)
    load_before = os.getloadavg()[0]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gemma3"
        hf, ours = make_models(folder)
        prompt = torch.randint(0, ours.cfg.vocab_size, (1, 600))  # past the 512-token window
        with torch.inference_mode():
            diff = (hf(prompt).logits - ours(prompt)).abs().max().item()
        print(f"parity fp32, 600 tokens: max |logits(transformers) - logits(ours)| = {diff:.2e}")
        if diff > 1e-3:
            raise SystemExit("the two models disagree: not benchmarking")
        contexts = context_rows(hf, ours, args)
        decode = decode_rows(hf, ours, folder, args)
    print(
        f"\n{families._cpu_name()}, {os.cpu_count()} CPUs, {args.threads} torch threads; torch "
        f"{torch.__version__}, transformers {version('transformers')}, Python "
        f"{platform.python_version()}"
    )
    print(
        f"\n{PRESET}-shaped, random weights, batch 1, greedy: {args.prompt_tokens}-token prompt + "
        f"{args.new_tokens} new tokens, tokens/s over the call, median of {args.repeats}\n"
    )
    print("| dtype | ours | transformers | ours / transformers |")
    print("|---|---:|---:|---:|")
    for name, ours_tps, hf_tps in decode:
        print(f"| {name} | {ours_tps:.1f} | {hf_tps:.1f} | {ours_tps / hf_tps:.2f}x |")
    print(
        "\nKV cache after a prompt of n tokens (fp32, one sequence), and one decode step there "
        f"(median of {args.repeats})\n"
    )
    print(
        "| n | ours | transformers | every layer, every position | ours / all positions | "
        "step ours | step transformers | transformers / ours |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, ours_b, hf_b, full_b, ms_ours, ms_hf in contexts:
        print(
            f"| {n:,} | {ours_b / 2**20:.1f} MiB | {hf_b / 2**20:.1f} MiB | "
            f"{full_b / 2**20:.1f} MiB | {ours_b / full_b:.2f} | {ms_ours:.1f} ms | "
            f"{ms_hf:.1f} ms | {ms_hf / ms_ours:.2f}x |"
        )
    print(f"\nload average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
