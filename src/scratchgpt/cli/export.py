"""`scratchgpt export`: write a model as a Hugging Face folder that `transformers` loads as is,
or as a GGUF file (plus an Ollama Modelfile) that llama.cpp and Ollama run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scratchgpt.errors import OVERWRITE_ADVICE, ConfigError, OutputExistsError

DTYPES = ("float32", "bfloat16", "float16")
FORMATS = ("hf", "gguf")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")  # scratchgpt.weights.gguf.GGUF_TYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a model as a Hugging Face folder or a GGUF file (llama.cpp, Ollama)",
        description=(
            "Write a language model (a scratchgpt checkpoint, a training run, or a Hugging Face "
            "folder of any family we read) as a Hugging Face folder: config.json and "
            "model.safetensors in the family's layout (GPT2LMHeadModel, LlamaForCausalLM, "
            "Qwen3ForCausalLM), plus the tokenizer's tokenizer.json, tokenizer_config.json "
            "(with its chat template) and generation_config.json when the model has a Hugging "
            "Face tokenizer. With --format gguf: one .gguf file that llama.cpp loads (GPT-2, Llama 3.x, Qwen3; "
            "tokenizer inside), and an Ollama Modelfile beside it. LoRA adapters are merged "
            "first; a classifier cannot be exported."
        ),
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the model to export")
    p.add_argument(
        "--out", required=True, metavar="PATH", help="the folder (hf) or .gguf file (gguf) to write"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="hf",
        help="hf: a Hugging Face folder (default); "
        "gguf: a GGUF file for llama.cpp / Ollama, with a Modelfile beside it",
    )
    p.add_argument(
        "--dtype", choices=DTYPES, default=None, help="weight dtype (hf only; default: as loaded)"
    )
    p.add_argument(
        "--type",
        choices=GGUF_TYPES,
        default=None,
        help="GGUF weight type (gguf only; default f16): f32, f16, bf16 or q8_0 (8-bit blocks)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "gguf":
        return run_gguf(args)
    if args.type is not None:
        raise ConfigError("--type sets a GGUF weight type; use it with --format gguf")
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


def run_gguf(args: argparse.Namespace) -> int:
    """--format gguf: the .gguf file, then the Ollama Modelfile beside it."""
    from scratchgpt.weights import load_checkpoint
    from scratchgpt.weights.gguf import save_gguf
    from scratchgpt.weights.modelfile import MODELFILE, write_modelfile

    if args.dtype is not None:
        raise ConfigError(
            "--dtype applies to --format hf; for gguf choose --type f32|f16|bf16|q8_0"
        )
    out = Path(args.out)
    modelfile = out.with_name(MODELFILE)
    for path in (out, modelfile):  # checked first: never leave a .gguf without its Modelfile
        if path.exists() and not args.overwrite:
            raise OutputExistsError(f"{path} exists; refusing to overwrite it", OVERWRITE_ADVICE)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the .gguf file to write")
    loaded = load_checkpoint(args.checkpoint)
    if loaded.tokenizer is None:
        raise ConfigError(
            f"--checkpoint {args.checkpoint}: the model has no tokenizer; a GGUF file needs one"
        )
    gguf_type = args.type or "f16"
    save_gguf(loaded.model, loaded.tokenizer, out, type=gguf_type, overwrite=args.overwrite)
    write_modelfile(
        out,
        loaded.tokenizer,
        loaded.metadata,
        family=loaded.config.family,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {out} ({loaded.config.family}, {gguf_type}, "
        f"{loaded.model.num_parameters():,} parameters) and {modelfile}",
        file=sys.stderr,
    )
    print(out)
    return 0
