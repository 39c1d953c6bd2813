"""`scratchgpt export`: write a model as a Hugging Face folder that `transformers` loads as is."""

from __future__ import annotations

import argparse
import sys

DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a model as a Hugging Face folder (transformers loads it as is)",
        description=(
            "Write a language model (a scratchgpt checkpoint, a training run, or a Hugging Face "
            "folder of any family we read) as a Hugging Face folder: config.json and "
            "model.safetensors in the family's layout (GPT2LMHeadModel, LlamaForCausalLM, "
            "Qwen3ForCausalLM), plus the tokenizer's tokenizer.json, tokenizer_config.json "
            "(with its chat template) and generation_config.json when the model has a Hugging "
            "Face tokenizer. LoRA adapters are merged first; a classifier cannot be exported."
        ),
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the model to export")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument(
        "--dtype", choices=DTYPES, default=None, help="weight dtype (default: as loaded)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from scratchgpt.weights import load_checkpoint
    from scratchgpt.weights.hf import save_hf_model

    dtype = getattr(torch, args.dtype) if args.dtype else None
    loaded = load_checkpoint(args.checkpoint, dtype=dtype)
    out = save_hf_model(
        loaded.model, args.out, tokenizer=loaded.tokenizer, overwrite=args.overwrite
    )
    cfg = loaded.config
    with_tokenizer = hasattr(loaded.tokenizer, "save_pretrained")
    print(
        f"wrote {out} ({cfg.family}, {loaded.model.num_parameters():,} parameters"
        f"{', with its tokenizer' if with_tokenizer else ''})",
        file=sys.stderr,
    )
    print(out)
    return 0
