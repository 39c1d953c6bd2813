"""Llama 3.x / Qwen3 speed and loading memory, measured in one run against transformers.

Decode and prefill: a ``qwen3-0.6b``-shaped model (596M, tied embeddings, QK-norm, GQA 16/8
heads) with random weights, made by transformers' ``Qwen3ForCausalLM``, saved as a Hugging Face
folder and loaded into ours with ``scratchgpt.weights.load_model`` (the path every command uses);
the logits of both are checked to agree first. Then, at fp32 and at bf16 (both models cast from
the same fp32 weights):

- decode: batch-1 greedy generation of ``--new-tokens`` tokens after a ``--prompt-tokens``-token
  random prompt, KV cache on both sides: ours is ``scratchgpt.generation.generate`` on the model
  ``optimize_for_decoding`` prepared (what ``scratchgpt generate`` runs), transformers is
  ``generate(do_sample=False)``; tokens/s over the whole call (prefill included);
- prefill: one ``--prefill-tokens``-token prompt to its first new token (``generate`` with one new
  token on both sides), in prompt tokens/s.

Ours and transformers run alternately, ``--repeats`` times each after a warm-up, and each
reports its median: other jobs on a shared machine then slow both alike. Roofline columns:
decode must read every weight once per token (tokens/s <= read bandwidth / bytes per token, the
bandwidth timed as a sum over a 512 MiB tensor); prefill is matmul-bound (prompt tokens/s <= the
measured peak of a 2048 x 2048 matmul of that dtype / FLOPs per token: 2 per weight, plus
attention).

Loading memory: a ``llama3.2-1b``-shaped bf16 Hugging Face folder (sharded safetensors, random
weights written shard by shard) is loaded in a fresh subprocess by ``load_model(folder,
dtype=torch.bfloat16)`` and by transformers' ``from_pretrained(folder, dtype=torch.bfloat16)``;
each child reads every weight once after loading (so memory-mapped weights count as resident) and
reports its peak RSS (VmHWM) minus its RSS right before the load.

    python benchmarks/families.py [--quick] [--new-tokens 64] [--prompt-tokens 16]
        [--prefill-tokens 512] [--repeats 5] [--threads 2] [--skip-load] [--skip-speed]
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
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

# Python puts this folder first on sys.path, where benchmarks/tokenizers.py would shadow the
# `tokenizers` package that transformers imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

from scratchgpt.config import GPTConfig  # noqa: E402

SPEED_PRESET = "qwen3-0.6b"
LOAD_PRESET = "llama3.2-1b"


# ----------------------------------------------------------------------------- measurement
def read_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 7) -> float:
    """Bytes/s read by a sum over a large tensor (best of ``repeats``): decoding reads its
    weights and writes almost nothing, so this is its limit."""
    src = torch.ones(nbytes // 4)
    src.sum()
    return nbytes / min(_time(src.sum) for _ in range(repeats))


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n @ n x n matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_time(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls run in turn ``repeats`` times (after a warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_time(fn))
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------- models
def make_models(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers Qwen3ForCausalLM, ours) with the same random fp32 weights, via a saved
    Hugging Face folder."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from scratchgpt.weights import load_model
    from scratchgpt.weights.hf.llama import hf_config_from_ours

    cfg = GPTConfig.from_preset(SPEED_PRESET)
    hf_cfg = hf_config_from_ours(cfg)
    hf_cfg.pop("architectures")
    hf_cfg.pop("model_type")
    torch.manual_seed(0)
    hf = Qwen3ForCausalLM(Qwen3Config(**hf_cfg)).eval()
    with torch.no_grad():  # norms away from 1, so a mix-up of tensors would show in the logits
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(folder)
    ours = load_model(folder, dtype=torch.float32).model
    return hf, ours


def decode_bytes(cfg: GPTConfig, n_params: int, prompt: int, new: int, elem: int) -> int:
    """Bytes read to decode one token: every weight once (a tied table once: the embedding
    lookup reads one row), plus the key/value cache at its average length."""
    kv = 2 * cfg.n_layers * (prompt + new / 2) * cfg.kv_heads * cfg.head_size
    return int((n_params + kv) * elem)


def prefill_flops(cfg: GPTConfig, n_params: int, t: int) -> float:
    """FLOPs of a t-token prefill that computes logits for the last token only: 2 per weight per
    token (the output head once), plus causal attention (QK^T and AV over t^2/2 pairs)."""
    head = cfg.vocab_size * cfg.emb_dim
    body = n_params - head  # a tied head's table is read as the head, not the embedding
    attn = 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.head_size * t * t / 2
    return 2 * body * t + 2 * head + attn


# ----------------------------------------------------------------------------- speed
def hf_generate(hf: torch.nn.Module, ids: torch.Tensor, n: int) -> torch.Tensor:
    """transformers' greedy generation of exactly ``n`` tokens, KV cache on."""
    with torch.inference_mode():
        return hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
            do_sample=False, use_cache=True, pad_token_id=0,
        )  # fmt: skip


def same_prefix(a: torch.Tensor, b: torch.Tensor, start: int) -> int:
    """How many generated tokens (after ``start``) two outputs share before they first differ."""
    diff = (a[0, start:] != b[0, start:]).nonzero()
    return int(diff[0, 0]) if len(diff) else a.shape[1] - start


def measure(
    name: str, hf: torch.nn.Module, ours: torch.nn.Module, args: argparse.Namespace
) -> list[tuple]:
    """Decode and prefill rows of one dtype: (dtype, what, ours/s, transformers/s, limit/s, or
    for decode the bytes read per token)."""
    from scratchgpt.generation import generate, optimize_for_decoding

    cfg, n_params = ours.cfg, ours.num_parameters()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens), generator=g)
    long_prompt = torch.randint(0, cfg.vocab_size, (1, args.prefill_tokens), generator=g)
    fast = optimize_for_decoding(ours)  # what `scratchgpt generate` runs
    new = args.new_tokens
    shared = same_prefix(generate(fast, prompt, new), hf_generate(hf, prompt, new), prompt.shape[1])
    print(f"{name}: ours and transformers generate the same first {shared} of {new} greedy tokens")

    t = alternate(
        {"ours": lambda: generate(fast, prompt, new), "hf": lambda: hf_generate(hf, prompt, new)},
        args.repeats,
    )
    elem = next(ours.parameters()).element_size()
    # The decode limit is filled in with the best bandwidth measured in the run.
    per_token = decode_bytes(cfg, n_params, args.prompt_tokens, new, elem)
    rows = [(name, "decode", new / t["ours"], new / t["hf"], per_token)]

    t = alternate(
        {"ours": lambda: generate(fast, long_prompt, 1),
         "hf": lambda: hf_generate(hf, long_prompt, 1)},
        args.repeats,
    )  # fmt: skip
    peak = matmul_peak(next(ours.parameters()).dtype)
    n = args.prefill_tokens
    rows.append(
        (name, "prefill", n / t["ours"], n / t["hf"], n * peak / prefill_flops(cfg, n_params, n))
    )
    print(f"{name}: matmul peak {peak / 1e9:.0f} GFLOP/s")
    return rows


def speed_rows(args: argparse.Namespace, folder: Path) -> list[tuple]:
    """Decode and prefill rows at fp32, then bf16 (ours loaded again from the folder at bf16, as
    a user would; transformers cast in place)."""
    from scratchgpt.weights import load_model

    hf, ours = make_models(folder)
    prompt = torch.randint(0, ours.cfg.vocab_size, (1, args.prompt_tokens))
    with torch.inference_mode():
        ref = hf(prompt).logits
        diff = (ref - ours(prompt)).abs().max().item()
    print(f"parity fp32: max |logits(transformers) - logits(ours)| = {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the two models disagree: not benchmarking")
    # Measured before each dtype and at the end; the highest is the machine's (other jobs on a
    # shared machine can take bandwidth for a while).
    bw = read_bandwidth()
    rows = measure("fp32", hf, ours, args)
    del ours
    hf.to(torch.bfloat16)
    ours = load_model(folder, dtype=torch.bfloat16).model
    bw = max(bw, read_bandwidth())
    with torch.inference_mode():
        ours16, hf16 = ours(prompt).float(), hf(prompt).logits.float()
    print(
        f"bf16: max |logits - fp32 logits|: ours {(ours16 - ref).abs().max().item():.3f}, "
        f"transformers {(hf16 - ref).abs().max().item():.3f} (logits' std {ref.std().item():.3f}); "
        f"ours vs transformers {(ours16 - hf16).abs().max().item():.3f}"
    )
    rows += measure("bf16", hf, ours, args)
    args.bandwidth = bw = max(bw, read_bandwidth())
    return [(*r[:4], bw / r[4]) if r[1] == "decode" else r for r in rows]


# ----------------------------------------------------------------------------- loading memory
def write_hf_folder(folder: Path, shard_bytes: int = 1 << 30) -> int:
    """A ``LOAD_PRESET``-shaped bf16 Hugging Face folder with random weights, written shard by
    shard (never the whole model in memory); returns the weight bytes."""
    from safetensors.torch import save_file

    from scratchgpt.weights.hf.llama import hf_config_from_ours, hf_plan

    cfg = GPTConfig.from_preset(LOAD_PRESET)
    plan = hf_plan(cfg)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for m in plan:
        nbytes = 2 * torch.Size(m.source_shape).numel()
        if size + nbytes > shard_bytes and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append((m.source, m.source_shape))
        size += nbytes
    g = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            t = torch.empty(shape, dtype=torch.bfloat16)
            t.normal_(0, 0.02, generator=g) if len(shape) == 2 else t.fill_(1.0)
            tensors[name] = t
            weight_map[name] = file
            total += t.numel() * 2
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = hf_config_from_ours(cfg, torch.bfloat16)
    (folder / "config.json").write_text(json.dumps(config))
    return total


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def load_child(who: str, folder: str) -> None:
    """Run in a fresh process: load ``folder`` at bf16, read every weight, print JSON."""
    if who == "ours":
        from scratchgpt.weights import load_model

        def load() -> torch.nn.Module:
            return load_model(folder, dtype=torch.bfloat16).model
    else:
        from transformers import AutoModelForCausalLM

        def load() -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)

    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - t0
    loaded = _status_kb("VmHWM")
    with torch.no_grad():
        for p in model.parameters():  # memory-mapped pages count once they are read
            p.max()  # (a sum in float32 would make a float32 copy)
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    peak = _status_kb("VmHWM")
    out = {"before": before, "loaded": loaded, "peak": peak, "seconds": seconds, "dtypes": dtypes}
    print(json.dumps({k: v * 1024 if isinstance(v, int) else v for k, v in out.items()}))


def loading_rows(tmp: Path) -> list[tuple]:
    folder = tmp / "load"
    folder.mkdir()
    weight_bytes = write_hf_folder(folder)
    rows = []
    env = dict(os.environ)
    for who in ("ours", "transformers"):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--load-child", who, str(folder)],
            check=True, capture_output=True, text=True, env=env,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((who, r["peak"] - r["before"], weight_bytes, r["seconds"], r["dtypes"]))
    return rows


# ----------------------------------------------------------------------------- report
def print_speed(rows: list[tuple], args: argparse.Namespace) -> None:
    print(
        f"\n{SPEED_PRESET}-shaped, random weights, batch 1, greedy; decode: {args.prompt_tokens}-token "
        f"prompt + {args.new_tokens} new tokens (tokens/s over the call); prefill: "
        f"{args.prefill_tokens}-token prompt to its first token (prompt tokens/s); median of {args.repeats}\n"
    )
    print(
        "| dtype | run | ours | transformers | ours / transformers | roofline | ours % of roofline |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for dtype, what, ours, hf, limit in rows:
        unit = "tokens/s" if what == "decode" else "prompt tokens/s"
        print(
            f"| {dtype} | {what} ({unit}) | {ours:.1f} | {hf:.1f} | {ours / hf:.2f}x | "
            f"{limit:.1f} | {100 * ours / limit:.0f}% |"
        )


def print_loading(rows: list[tuple]) -> None:
    weight_bytes = rows[0][2]
    print(
        f"\nloading a {LOAD_PRESET}-shaped bf16 Hugging Face folder ({weight_bytes / 1e9:.2f} GB of "
        "weights, 3 shards) at bf16, fresh process each; peak RSS (VmHWM) - RSS before the load\n"
    )
    print("| loader | peak - before | x weight bytes | load time | parameter dtypes |")
    print("|---|---:|---:|---:|---|")
    for who, extra, wb, seconds, dtypes in rows:
        name = "ours `load_model`" if who == "ours" else "transformers `from_pretrained`"
        print(
            f"| {name} | {extra / 1e9:.2f} GB | {extra / wb:.2f}x | {seconds:.1f} s | "
            f"{', '.join(d.removeprefix('torch.') for d in dtypes)} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats (smoke run)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 64 (16 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument(
        "--prefill-tokens", type=int, default=None, help="default 512 (128 with --quick)"
    )
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-load", action="store_true", help="leave out the loading-memory rows")
    ap.add_argument("--skip-speed", action="store_true", help="leave out decode and prefill")
    ap.add_argument("--load-child", nargs=2, metavar=("WHO", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.load_child:
        load_child(*args.load_child)
        return
    args.new_tokens = args.new_tokens or (16 if args.quick else 64)
    args.prefill_tokens = args.prefill_tokens or (128 if args.quick else 512)
    args.repeats = args.repeats or (1 if args.quick else 5)
    load_before = os.getloadavg()[0]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        speed = [] if args.skip_speed else speed_rows(args, Path(tmp) / "qwen3")
        loading = [] if args.skip_load else loading_rows(Path(tmp))
    cpu = _cpu_name()
    print(
        f"\n{cpu}, {os.cpu_count()} CPUs, {args.threads} torch threads; torch {torch.__version__}, "
        f"transformers {version('transformers')}, safetensors {version('safetensors')}, "
        f"Python {platform.python_version()}"
    )
    if speed:
        print(
            f"read bandwidth {args.bandwidth / 1e9:.1f} GB/s (a sum over 512 MiB, best of the runs)"
        )
        print_speed(speed, args)
    if loading:
        print_loading(loading)
    print(f"\nload average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
