"""`scratchgpt info`: a model's config, size, memory and FLOPs, from a preset or a checkpoint.

Only config.json is read from a checkpoint (never the weights), so this is instant for any size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a model's config, parameter counts, memory, KV cache and FLOPs",
        description=(
            "Show a model's config and its size: parameters (total, without the output head, "
            "embedding / non-embedding, active per token for a mixture of experts), weight "
            "memory at fp32 and bf16, the KV cache of one sequence in bf16 (bytes per token, "
            "local layers' rings, at the full context), and FLOPs per token. "
            "For a checkpoint only config.json is read, plus its tokenizer and metadata."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--preset", metavar="NAME", help="a config preset, e.g. gpt2-small, mini, tiny"
    )
    src.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="a checkpoint folder, a Hugging Face GPT-2 folder, a .safetensors file with "
        "config.json beside it, or a downloaded model name (gpt2-small ...)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """The information `info` prints, as a JSON-able dict."""
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import kv_cache_bytes, kv_cache_bytes_per_token, model_stats

    out: dict[str, Any] = {}
    if args.preset is not None:
        cfg = GPTConfig.from_preset(args.preset)
        out["source"] = {"preset": args.preset}
    else:
        cfg, extra = _checkpoint_info(args.checkpoint)
        out["source"] = extra.pop("source")
        out.update(extra)
    stats = model_stats(cfg)
    out["config"] = cfg.to_dict()
    out["parameters"] = {
        "total": stats.total_params,
        "without_head": stats.params_without_head,
        "head": stats.head_params,
        "embedding": stats.embedding_params,
        "non_embedding": stats.non_embedding_params,
    }
    if cfg.num_experts is not None:
        # A mixture of experts computes with k of its experts per token, not all of them.
        out["parameters"]["active_per_token"] = stats.active_params
    out["memory_mb"] = {"fp32": round(stats.memory_mb(4), 2), "bf16": round(stats.memory_mb(2), 2)}
    # The KV cache of one sequence, bf16 (fp32 is twice): grouped-query models store only their
    # key/value heads, local (sliding-window) layers only their window.
    per_token, windows = kv_cache_bytes_per_token(cfg, bytes_per_value=2)
    out["kv_cache_bf16"] = {
        "bytes_per_token": per_token,
        "window_bytes": windows,
        "at_context_bytes": kv_cache_bytes(cfg, cfg.context_length, bytes_per_value=2),
    }
    out["flops_per_token"] = {
        "forward": stats.forward_flops_per_token,
        "training": stats.train_flops_per_token,
    }
    return out


def _checkpoint_info(name_or_path: str) -> tuple[Any, dict[str, Any]]:
    from scratchgpt.weights import inspect_model

    files = inspect_model(name_or_path)
    extra: dict[str, Any] = {"source": {"checkpoint": str(files.path)}, "format": files.format}
    if files.family is not None:
        extra["tokenizer"] = {"name": files.family.tokenizer, "file": None}
        extra["metadata"] = {}
    else:
        extra["scratchgpt_version"] = files.manifest.get("scratchgpt_version")
        extra["metadata"] = files.metadata
        extra["tokenizer"] = None
        if files.tokenizer_file is not None:
            from scratchgpt.tokenizers import load_tokenizer

            tok = load_tokenizer(files.tokenizer_file)
            extra["tokenizer"] = {
                "name": tok.name,
                "vocab_size": tok.vocab_size,
                "file": str(files.tokenizer_file),
            }
    if files.weights.is_file():
        extra["weights_file"] = {"path": str(files.weights), "bytes": files.weights.stat().st_size}
    return files.config, extra


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_flops(n: int) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit} ({n:,})"
    return f"{n:,} FLOP"


def format_text(info: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = []
    src = info["source"]
    lines.append(
        f"preset: {src['preset']}" if "preset" in src else f"checkpoint: {src['checkpoint']}"
    )
    if "format" in info:
        lines.append(f"format: {info['format']}")
    lines.append("")
    lines.append("config")
    for k, v in info["config"].items():
        lines.append(f"  {k:<16} {v}")
    p = info["parameters"]
    lines.append("")
    lines.append("parameters")
    lines.append(f"  {'total':<26} {_fmt_int(p['total']):>16}")
    lines.append(f"  {'without output head':<26} {_fmt_int(p['without_head']):>16}")
    lines.append(f"  {'output head':<26} {_fmt_int(p['head']):>16}")
    lines.append(f"  {'embedding (token + pos)':<26} {_fmt_int(p['embedding']):>16}")
    lines.append(f"  {'non-embedding':<26} {_fmt_int(p['non_embedding']):>16}")
    if "active_per_token" in p:
        lines.append(f"  {'active per token':<26} {_fmt_int(p['active_per_token']):>16}")
    m = info["memory_mb"]
    lines.append("")
    lines.append("memory (weights only)")
    lines.append(f"  fp32  {m['fp32']:,.2f} MB")
    lines.append(f"  bf16  {m['bf16']:,.2f} MB")
    kv = info["kv_cache_bf16"]
    lines.append("")
    lines.append("KV cache (bf16, one sequence)")
    lines.append(f"  {'per token':<26} {_fmt_int(kv['bytes_per_token']):>16} bytes")
    if kv["window_bytes"]:  # local layers: a fixed amount, their rings
        rings = kv["window_bytes"] / 1024**2
        lines.append(f"  {'local layers (rings)':<26} {rings:>16,.2f} MB")
    at = f"at {info['config']['context_length']:,} tokens"
    lines.append(f"  {at:<26} {kv['at_context_bytes'] / 1024**2:>16,.2f} MB")
    f = info["flops_per_token"]
    lines.append("")
    lines.append("FLOPs per token (at full context)")
    lines.append(f"  forward   {_fmt_flops(f['forward'])}")
    lines.append(f"  training  {_fmt_flops(f['training'])}")
    if "weights_file" in info:
        w = info["weights_file"]
        lines.append("")
        lines.append(f"weights file: {w['path']} ({w['bytes'] / 1024**2:,.2f} MB)")
    if "tokenizer" in info:
        t = info["tokenizer"]
        if t is None:
            desc = "none saved"
        elif t.get("file") is None:
            desc = f"{t['name']} (bundled)"
        else:
            desc = f"{t['name']}, {t['vocab_size']:,} tokens ({Path(t['file']).name})"
        lines.append(f"tokenizer: {desc}")
    if "metadata" in info:
        meta = info["metadata"]
        lines.append("metadata: " + (json.dumps(meta, ensure_ascii=False) if meta else "none"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = describe(args)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print(format_text(info))
    return 0
