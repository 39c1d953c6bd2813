"""Generation speed: tokens/s of batch-1 greedy decoding, measured in one run against references.

Model: gpt2-small with random weights, built as the released GPT-2 is (qkv bias, head tied to
the token embedding). The same weights go into a Hugging Face ``GPT2LMHeadModel`` and into ours
(checked: both give the same logits), then each generates ``--new-tokens`` tokens greedily after
a random ``--prompt-tokens``-token prompt.

Rows:
- ours fp32 (KV cache, weights laid out by ``optimize_for_decoding`` as ``scratchgpt generate``
  does), the same with nn.Linear's default layout, ours bf16 (the faster of: weights stored in
  bfloat16, or fp32 weights under autocast; the row says which), ours without the KV cache (the
  book's loop);
- transformers ``GPT2LMHeadModel.generate()`` (greedy, KV cache) on the same weights;
- the machine's limit: batch-1 decoding must read every weight once per token, so
  tokens/s <= copy bandwidth / bytes read per token (weights, plus the KV cache at its average
  length). Copy bandwidth is timed on a large tensor copy, counting bytes read + written.

tokens/s counts new tokens over the whole call (prefill included), median of ``--repeats`` runs
after a warm-up; the uncached loop, which is far slower, is timed once. Threads: 2 (torch).
The load average before and after is printed: other jobs on the machine slow everything down.

    python benchmarks/generation.py [--quick] [--device cuda] [--new-tokens 200] [--prompt-tokens 20]
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

# Python puts this folder first on sys.path, where benchmarks/tokenizers.py would shadow the
# `tokenizers` package that transformers imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.generation import generate, optimize_for_decoding  # noqa: E402
from scratchgpt.model import GPTModel  # noqa: E402
from scratchgpt.model.quantize import quantize_model  # noqa: E402


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


def bytes_per_token(model: GPTModel, prompt: int, new: int, elem: int) -> int:
    """Bytes read to decode one token: every weight once (the position table and the embedding
    lookup read one row each; a tied head reads the table once), plus the KV cache."""
    cfg = model.cfg
    weights = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    if not cfg.tie_weights:
        weights -= model.tok_emb.weight.numel()
    avg_len = prompt + new / 2
    kv = 2 * cfg.n_layers * avg_len * cfg.emb_dim
    return int((weights + kv) * elem)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats (smoke run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--new-tokens", type=int, default=None, help="default 200 (50 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-uncached", action="store_true", help="leave out the slow book loop")
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

    mask = torch.ones_like(prompt)

    def run_hf(n: int) -> torch.Tensor:
        with torch.inference_mode():
            return hf.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=cfg.vocab_size - 1,
            )

    # What `scratchgpt generate` runs: weights in the layout the CPU kernels read fastest.
    fast = optimize_for_decoding(copy.deepcopy(ours))
    bf16_model = optimize_for_decoding(copy.deepcopy(ours).to(torch.bfloat16))

    # int8 weights (scratchgpt.model.quantize), with fp32 and with bf16 activations.
    int8_fp32 = optimize_for_decoding(quantize_model(copy.deepcopy(ours)).eval())
    int8_bf16 = optimize_for_decoding(quantize_model(copy.deepcopy(ours).to(torch.bfloat16)).eval())

    def run_autocast(n: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return generate(ours, prompt, n)

    runs: dict[str, Callable[[int], torch.Tensor]] = {
        "ours fp32": lambda n: generate(fast, prompt, n),
        "ours fp32, Linear layout": lambda n: generate(ours, prompt, n),
        "ours bf16 weights": lambda n: generate(bf16_model, prompt, n),
        "ours bf16 autocast": run_autocast,
        "ours int8 weights, fp32": lambda n: generate(int8_fp32, prompt, n),
        "ours int8 weights, bf16": lambda n: generate(int8_bf16, prompt, n),
        "transformers fp32": run_hf,
    }
    tps: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name, fn in runs.items():
        fn(min(new, 16))  # warm-up: first-call allocations, kernel selection
        outputs[name] = fn(new)
        tps[name] = new / timed(lambda fn=fn: fn(new), device, repeats)
    same = torch.equal(outputs["ours fp32"], outputs["transformers fp32"])
    print(f"greedy tokens identical, ours fp32 vs transformers: {same}")
    if not args.skip_uncached:
        generate(fast, prompt, 4, use_cache=False)
        tps["ours fp32, no KV cache"] = new / timed(
            lambda: generate(fast, prompt, new, use_cache=False), device, 1
        )

    bw_after = copy_bandwidth(device)
    bw = max(bw_before, bw_after)
    limit32 = bw / bytes_per_token(ours, args.prompt_tokens, new, 4)
    limit16 = bw / bytes_per_token(ours, args.prompt_tokens, new, 2)
    bf16_name = max(("ours bf16 weights", "ours bf16 autocast"), key=tps.__getitem__)
    # int8: one byte per weight of the blocks and the head (the embedding table is read a row a
    # token), plus the scales; counted as a quarter of fp32's weight bytes.
    limit8 = bw / (bytes_per_token(ours, args.prompt_tokens, new, 4) / 4)
    int8_name = max(("ours int8 weights, fp32", "ours int8 weights, bf16"), key=tps.__getitem__)

    hf_tps, fp32_tps = tps["transformers fp32"], tps["ours fp32"]
    rows = [
        ("ours fp32", fp32_tps, limit32),
        ("ours fp32, Linear layout", tps["ours fp32, Linear layout"], limit32),
        (bf16_name, tps[bf16_name], limit16),
        (int8_name, tps[int8_name], limit8),
        ("ours fp32, no KV cache", tps.get("ours fp32, no KV cache"), limit32),
        ("transformers fp32", hf_tps, limit32),
        ("bandwidth limit fp32", limit32, limit32),
        ("bandwidth limit bf16", limit16, limit16),
        ("bandwidth limit int8", limit8, limit8),
    ]
    other = "ours bf16 autocast" if bf16_name == "ours bf16 weights" else "ours bf16 weights"

    if device.type == "cpu":
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads"
    else:
        where = torch.cuda.get_device_name(device)
    print(
        f"\ngpt2-small (124M, tied, qkv bias), batch 1, greedy, {args.prompt_tokens}-token prompt, "
        f"{new} new tokens, {device.type} ({where}); median of {repeats}"
    )
    print(
        f"torch {torch.__version__}, transformers {version('transformers')}, "
        f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write; before/after the runs: "
        f"{bw_before / 1e9:.1f}/{bw_after / 1e9:.1f})"
    )
    print()
    print(
        f"| {'run':<24} | {'tokens/s':>9} | {'x transformers':>14} | {'x ours fp32':>11} | {'% of limit':>10} |"
    )
    print(f"|{'-' * 26}|{'-' * 11}:|{'-' * 15}:|{'-' * 12}:|{'-' * 11}:|")
    for name, v, limit in rows:
        if v is None:
            continue
        print(
            f"| {name:<24} | {v:>9.1f} | {v / hf_tps:>13.2f}x | {v / fp32_tps:>10.2f}x | "
            f"{100 * v / limit:>9.0f}% |"
        )
    print(f"\n({other}: {tps[other]:.1f} tokens/s)")
    other8 = next(
        n for n in ("ours int8 weights, fp32", "ours int8 weights, bf16") if n != int8_name
    )
    print(f"({other8}: {tps[other8]:.1f} tokens/s)")
    same8 = torch.equal(outputs["ours fp32"], outputs["ours int8 weights, fp32"])
    print(f"greedy tokens identical, ours fp32 vs int8 (random weights): {same8}")
    print(f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    if "ours fp32, no KV cache" in tps:
        print(f"KV cache speed-up: {fp32_tps / tps['ours fp32, no KV cache']:.1f}x")


if __name__ == "__main__":
    main()
