"""Generation speed: tokens/s of batch-1 greedy decoding, measured in one run against references.

Model: gpt2-small with random weights, built as the released GPT-2 is (qkv bias, head tied to
the token embedding). The same weights go into a Hugging Face ``GPT2LMHeadModel`` and into ours
(checked: both give the same logits), then each generates ``--new-tokens`` tokens greedily after
a random ``--prompt-tokens``-token prompt.

Rows:
- ours fp32 (KV cache, ``optimize_for_decoding`` as ``scratchgpt generate`` does), the same with
  nn.Linear's default layout, ours bf16 (weights stored in bfloat16, oneDNN-packed), ours int8
  (``quantize_model``: int8 weights, bf16 and fp32 activations, the project's int8 kernel), ours
  without the KV cache (the book's loop);
- transformers ``GPT2LMHeadModel.generate()`` (greedy, KV cache) on the same weights;
- llama.cpp (through ``llama-cpp-python``, when importable) on the same weights exported by
  ``scratchgpt.weights.gguf.save_gguf`` as F32, F16, BF16 and Q8_0, same thread count;
- the machine's limit: batch-1 decoding must read every weight once per token, so
  tokens/s <= copy bandwidth / bytes read per token (weights at the row's bytes per weight, plus
  the KV cache at its average length). Copy bandwidth is timed on a large tensor copy, counting
  bytes read + written.

Then two more tables (skip with ``--skip-context`` / ``--skip-prefill``): decode time per token at
context 32 and at context 1024 (the KV cache's cost as the context grows), and prefill speed
(prompt tokens/s of one forward pass over a 512-token prompt) for ours and transformers.

tokens/s counts new tokens over the whole call (prefill included), median of ``--repeats`` runs
after a warm-up; the uncached loop, which is far slower, is timed once. Threads: 2 (torch).
The load average before and after is printed: other jobs on the machine slow everything down.

    python benchmarks/generation.py [--quick] [--device cuda] [--new-tokens 200] [--prompt-tokens 20]
    # llama.cpp rows: llama-cpp-python in a venv of its own (same Python version)
    PYTHONPATH=src:/tmp/llamacpp/lib/python3.11/site-packages python benchmarks/generation.py
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

# Python puts this folder first on sys.path, where benchmarks/tokenizers.py would shadow the
# `tokenizers` package that transformers imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.generation import generate, optimize_for_decoding  # noqa: E402
from scratchgpt.model import GPTModel  # noqa: E402
from scratchgpt.model.quantize import quantize_model  # noqa: E402
from scratchgpt.tokenizers import get_tokenizer  # noqa: E402
from scratchgpt.weights.gguf import save_gguf  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``repeats`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int = 512 * 2**20, repeats: int = 7) -> float:
    """Bytes/s of a large tensor copy, counting the bytes read and the bytes written."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    t = timed(lambda: dst.copy_(src), device, repeats)
    return 2 * nbytes / t


def hf_model(cfg: GPTConfig, seed: int):
    """A randomly initialised transformers GPT2LMHeadModel shaped like ``cfg``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=cfg.ln_eps,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_cfg).eval()


@torch.no_grad()
def ours_from_hf(hf, cfg: GPTConfig) -> GPTModel:
    """Our model with the HF model's weights: through the project's ``load_hf_gpt2`` on a saved
    folder, or (without interop) a direct copy: Conv1D weights are (in, out), so they are
    transposed; c_attn holds query, key and value side by side."""
    try:
        from scratchgpt.weights import load_hf_gpt2
    except ImportError:
        load_hf_gpt2 = None
    if load_hf_gpt2 is not None:
        with tempfile.TemporaryDirectory() as tmp:
            hf.save_pretrained(tmp, safe_serialization=True)
            return load_hf_gpt2(tmp, dtype=torch.float32).eval()
    sd = hf.state_dict()
    model = GPTModel(cfg).eval()
    e = cfg.emb_dim
    model.tok_emb.weight.copy_(sd["transformer.wte.weight"])
    model.pos_emb.weight.copy_(sd["transformer.wpe.weight"])
    for i, block in enumerate(model.trf_blocks):
        p = f"transformer.h.{i}."
        w, b = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]
        for j, lin in enumerate((block.att.W_query, block.att.W_key, block.att.W_value)):
            lin.weight.copy_(w[:, j * e : (j + 1) * e].t())
            lin.bias.copy_(b[j * e : (j + 1) * e])
        block.att.out_proj.weight.copy_(sd[p + "attn.c_proj.weight"].t())
        block.att.out_proj.bias.copy_(sd[p + "attn.c_proj.bias"])
        block.ff.layers[0].weight.copy_(sd[p + "mlp.c_fc.weight"].t())
        block.ff.layers[0].bias.copy_(sd[p + "mlp.c_fc.bias"])
        block.ff.layers[2].weight.copy_(sd[p + "mlp.c_proj.weight"].t())
        block.ff.layers[2].bias.copy_(sd[p + "mlp.c_proj.bias"])
        for ours, theirs in ((block.norm1, "ln_1"), (block.norm2, "ln_2")):
            ours.scale.copy_(sd[p + theirs + ".weight"])
            ours.shift.copy_(sd[p + theirs + ".bias"])
    model.final_norm.scale.copy_(sd["transformer.ln_f.weight"])
    model.final_norm.shift.copy_(sd["transformer.ln_f.bias"])
    return model


def weight_count(model: GPTModel) -> int:
    """Weights read to decode one token: every matrix once (the position table and the embedding
    lookup read one row each; a tied head reads the table once)."""
    n = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    if not model.cfg.tie_weights:
        n -= model.tok_emb.weight.numel()
    return n


def bytes_per_token(model: GPTModel, avg_len: float, weight_bytes: float, kv_bytes: int) -> float:
    """Bytes read to decode one token: the weights plus the KV cache at ``avg_len`` positions."""
    cfg = model.cfg
    kv = 2 * cfg.n_layers * avg_len * cfg.emb_dim
    return weight_count(model) * weight_bytes + kv * kv_bytes


# llama.cpp's GGUF types: bytes per weight (Q8_0: 32 int8 weights + one fp16 scale) and whether
# its KV cache is f16 (llama.cpp's default cache type).
LLAMA_TYPES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}


def llama_run(path: Path, n_ctx: int, threads: int, prompt: list[int], n: int, repeats: int):
    """(tokens/s, greedy tokens) of llama.cpp generating ``n`` tokens after ``prompt``, or None
    without llama-cpp-python. The model is loaded for this run only and closed after: a loaded
    llama.cpp context keeps threads that would take CPU from the other rows."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(
        model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
        n_batch=max(len(prompt), 32), verbose=False,
    )  # fmt: skip

    def run(k: int) -> list[int]:
        out: list[int] = []
        for tok in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            out.append(tok)
            if len(out) == k:
                break
        return out

    try:
        run(min(n, 16))
        tokens = run(n)
        return n / timed(lambda: run(n), torch.device("cpu"), repeats), tokens
    finally:
        llm.close()


def decode_ms_per_token(
    fn: Callable[[torch.Tensor, int], object],
    prompt: torch.Tensor,
    device: torch.device,
    repeats: int,
    steps: int = 32,
) -> float:
    """Milliseconds per decode step after ``prompt``: (prefill + steps) - (prefill + 1 step)."""
    fn(prompt, 2)
    long = timed(lambda: fn(prompt, steps + 1), device, repeats)
    short = timed(lambda: fn(prompt, 1), device, repeats)
    return 1e3 * (long - short) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats (smoke run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--new-tokens", type=int, default=None, help="default 200 (50 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-uncached", action="store_true", help="leave out the slow book loop")
    ap.add_argument("--skip-context", action="store_true", help="leave out context 32 vs 1024")
    ap.add_argument("--skip-prefill", action="store_true", help="leave out the prefill table")
    ap.add_argument("--skip-llama", action="store_true", help="leave out llama.cpp")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    new = args.new_tokens or (50 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 5)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here")
    torch.set_num_threads(args.threads)

    # Measured before and after the runs; the higher is the machine's (on a shared machine other
    # jobs can take bandwidth for a while).
    bw_before = copy_bandwidth(device)
    cfg = GPTConfig.from_preset("gpt2-small", qkv_bias=True, tie_weights=True, drop_rate=0.0)
    hf = hf_model(cfg, seed=0)
    ours = ours_from_hf(hf, cfg)
    hf.to(device)
    ours.to(device)
    prompt = torch.randint(
        0, cfg.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)
    )
    prompt = prompt.to(device)
    with torch.inference_mode():
        diff = (hf(prompt).logits - ours(prompt)).abs().max().item()
    print(f"parity: max |logits(HF) - logits(ours)| = {diff:.2e}")

    def run_hf(n: int, ids: torch.Tensor = prompt) -> torch.Tensor:
        with torch.inference_mode():
            return hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=cfg.vocab_size - 1,
            )

    # What `scratchgpt generate` runs: optimize_for_decoding (fused, packed, relaid weights).
    fast = optimize_for_decoding(copy.deepcopy(ours))
    models = {
        "ours bf16": optimize_for_decoding(copy.deepcopy(ours).to(torch.bfloat16)),
        "ours int8, bf16 activations": optimize_for_decoding(
            quantize_model(copy.deepcopy(ours).to(torch.bfloat16))
        ),
        "ours int8, fp32 activations": optimize_for_decoding(quantize_model(copy.deepcopy(ours))),
    }
    # (run, bytes per weight, bytes per KV-cache element)
    kinds = {
        "ours fp32": (4, 4),
        "ours fp32, Linear layout": (4, 4),
        "ours bf16": (2, 2),
        "ours int8, bf16 activations": (1, 2),
        "ours int8, fp32 activations": (1, 4),
        "transformers fp32": (4, 4),
    }
    runs: dict[str, Callable[[int], object]] = {
        "ours fp32": lambda n: generate(fast, prompt, n),
        "ours fp32, Linear layout": lambda n: generate(ours, prompt, n),
        **{name: (lambda n, m=m: generate(m, prompt, n)) for name, m in models.items()},
        "transformers fp32": run_hf,
    }
    tps: dict[str, float] = {}
    outputs: dict[str, object] = {}
    for name, fn in runs.items():
        fn(min(new, 16))  # warm-up: first-call allocations, kernel selection
        outputs[name] = fn(new)
        tps[name] = new / timed(lambda fn=fn: fn(new), device, repeats)
    same = torch.equal(outputs["ours fp32"], outputs["transformers fp32"])
    print(f"greedy tokens identical, ours fp32 vs transformers: {same}")
    llama_note = "llama.cpp: not run (--skip-llama)"
    if not args.skip_llama and device.type == "cpu":
        ids, tok = prompt[0].tolist(), get_tokenizer("gpt2")
        with tempfile.TemporaryDirectory() as tmp:
            for t, size in LLAMA_TYPES.items():
                path = save_gguf(ours, tok, Path(tmp) / f"gpt2-{t}.gguf", type=t)
                got = llama_run(path, args.prompt_tokens + new + 8, args.threads, ids, new, repeats)
                if got is None:
                    llama_note = "llama.cpp: not run (llama-cpp-python is not importable)"
                    break
                llama_note = f"llama.cpp: llama-cpp-python {version('llama_cpp_python')}"
                name = f"llama.cpp {t.upper()}"
                tps[name], outputs[name] = got
                kinds[name] = (size, 2)
    if "llama.cpp F32" in outputs:
        ours_new = outputs["ours fp32"][0, args.prompt_tokens :].tolist()
        theirs = list(outputs["llama.cpp F32"])
        agree = next((i for i, (a, b) in enumerate(zip(ours_new, theirs)) if a != b), len(theirs))
        print(f"greedy tokens, ours fp32 vs llama.cpp F32: first {agree}/{len(theirs)} agree")
    if not args.skip_uncached:
        generate(fast, prompt, 4, use_cache=False)
        tps["ours fp32, no KV cache"] = new / timed(
            lambda: generate(fast, prompt, new, use_cache=False), device, 1
        )
        kinds["ours fp32, no KV cache"] = (4, 4)

    bw_after = copy_bandwidth(device)
    bw = max(bw_before, bw_after)
    avg_len = args.prompt_tokens + new / 2

    def limit(name: str) -> float:
        w, kv = kinds[name]
        return bw / bytes_per_token(ours, avg_len, w, kv)

    hf_tps, fp32_tps = tps["transformers fp32"], tps["ours fp32"]
    if device.type == "cpu":
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads"
    else:
        where = torch.cuda.get_device_name(device)
    print(
        f"\ngpt2-small (124M, tied, qkv bias), batch 1, greedy, {args.prompt_tokens}-token prompt, "
        f"{new} new tokens, {device.type} ({where}); median of {repeats}"
    )
    print(
        f"torch {torch.__version__}, transformers {version('transformers')}, {llama_note}; "
        f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write; before/after the runs: "
        f"{bw_before / 1e9:.1f}/{bw_after / 1e9:.1f})"
    )
    print()
    print(
        f"| {'run':<28} | {'tokens/s':>9} | {'x transformers':>14} | {'x ours fp32':>11} | "
        f"{'bytes/weight':>12} | {'% of limit':>10} |"
    )
    print(f"|{'-' * 30}|{'-' * 11}:|{'-' * 15}:|{'-' * 12}:|{'-' * 13}:|{'-' * 11}:|")
    for name, v in tps.items():
        print(
            f"| {name:<28} | {v:>9.1f} | {v / hf_tps:>13.2f}x | {v / fp32_tps:>10.2f}x | "
            f"{kinds[name][0]:>12.2f} | {100 * v / limit(name):>9.0f}% |"
        )
    for w, label in ((4, "fp32"), (2, "bf16"), (1, "int8")):
        v = bw / bytes_per_token(ours, avg_len, w, {4: 4, 2: 2, 1: 2}[w])
        print(
            f"| {'bandwidth limit ' + label:<28} | {v:>9.1f} | {v / hf_tps:>13.2f}x | "
            f"{v / fp32_tps:>10.2f}x | {w:>12.2f} | {100:>9.0f}% |"
        )
    for name in ("ours int8, bf16 activations", "ours int8, fp32 activations"):
        same8 = torch.equal(outputs["ours fp32"], outputs[name])
        print(f"greedy tokens identical, ours fp32 vs {name} (random weights): {same8}")
    if "ours fp32, no KV cache" in tps:
        print(f"KV cache speed-up: {fp32_tps / tps['ours fp32, no KV cache']:.1f}x")

    if not args.skip_context:
        context_table(ours, fast, models, run_hf, device, repeats, cfg.vocab_size)
    if not args.skip_prefill:
        prefill_table(ours, fast, models, hf, device, repeats, cfg.vocab_size)
    print(f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")


def context_table(ours, fast, models, run_hf, device, repeats, vocab) -> None:
    """Decode ms/token after a 32- and a 1024-token context: how much the KV cache adds."""
    g = torch.Generator().manual_seed(2)
    short = torch.randint(0, vocab, (1, 32), generator=g).to(device)
    long = torch.randint(0, vocab, (1, ours.cfg.context_length - 33), generator=g).to(device)
    rows = {"ours fp32": fast, **models}
    print("\ndecode time per token (ms) as the context grows (32 decode steps, median):\n")
    print(f"| {'run':<28} | {'context 32':>10} | {'context 1024':>12} | {'growth':>7} |")
    print(f"|{'-' * 30}|{'-' * 11}:|{'-' * 13}:|{'-' * 8}:|")
    fns = {name: (lambda p, n, m=m: generate(m, p, n)) for name, m in rows.items()}
    fns["transformers fp32"] = lambda p, n: run_hf(n, p)
    for name, fn in fns.items():
        a = decode_ms_per_token(fn, short, device, repeats)
        b = decode_ms_per_token(fn, long, device, repeats)
        print(f"| {name:<28} | {a:>10.2f} | {b:>12.2f} | {100 * (b / a - 1):>6.0f}% |")


def prefill_table(ours, fast, models, hf, device, repeats, vocab, length: int = 512) -> None:
    """Prompt tokens/s of one forward pass over a ``length``-token prompt (logits of the last
    position, as generation needs)."""
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(3))
    ids = ids.to(device)
    print(f"\nprefill: one forward pass over a {length}-token prompt (median of {repeats}):\n")
    print(f"| {'run':<28} | {'prompt tokens/s':>15} | {'x transformers':>14} |")
    print(f"|{'-' * 30}|{'-' * 16}:|{'-' * 15}:|")
    fns = {
        name: (lambda m=m: m(ids, last_token_only=True))
        for name, m in {"ours fp32": fast, **models}.items()
    }
    fns["transformers fp32"] = lambda: hf(ids, logits_to_keep=1)
    speed = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            fn()
            speed[name] = length / timed(fn, device, repeats)
    for name, v in speed.items():
        print(f"| {name:<28} | {v:>15.0f} | {v / speed['transformers fp32']:>13.2f}x |")


if __name__ == "__main__":
    main()
