"""`scratchgpt generate`: continue a prompt with a checkpoint, or with a random model of a preset."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scratchgpt.cli.args import (
    add_dtype_flag,
    add_quantize_flag,
    add_sampling_flags,
    inference_dtype,
    nonnegative_int,
    positive_int,
)
from scratchgpt.config import PRESETS

# The book seeds its random models with 123; a preset model without --seed uses it too, so the
# command prints the same text every time.
DEFAULT_PRESET_SEED = 123
GPT2_VOCAB_SIZE = 50257


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue a text prompt",
        description=(
            "Continue a prompt with a trained checkpoint (--checkpoint DIR: a scratchgpt checkpoint "
            "or a Hugging Face GPT-2 folder) or a randomly initialised model (--preset NAME). "
            "Greedy by default; --temperature > 0 samples (top-k, then temperature, then top-p)."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder to load")
    source.add_argument(
        "--preset",
        metavar="NAME",
        help=f"random model of this preset ({', '.join(PRESETS)}), weights seeded by --seed",
    )
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument(
        "--max-new-tokens", type=nonnegative_int, default=50, metavar="N", help="default: 50"
    )
    add_sampling_flags(p)
    p.add_argument(
        "--seed",
        type=int,
        help=f"seed for sampling (and a preset's weights, default {DEFAULT_PRESET_SEED})",
    )
    p.add_argument(
        "--stop",
        nargs="+",
        action="extend",
        metavar="STR",
        help="stop when the continuation contains one of these strings (not printed)",
    )
    p.add_argument(
        "--no-eos",
        action="store_true",
        help="keep going past <|endoftext|> (by default generation stops there)",
    )
    p.add_argument("--stream", action="store_true", help="print text as tokens arrive")
    p.add_argument(
        "--no-echo", action="store_true", help="print only the continuation, not the prompt"
    )
    p.add_argument(
        "--context-size", type=positive_int, metavar="N", help="default: the model's context"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="re-run the whole window each step (slow)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    add_dtype_flag(p)
    add_quantize_flag(p)
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model in eval mode on the requested device/dtype, tokenizer)."""
    import torch

    from scratchgpt.errors import CheckpointError, ConfigError

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    dtype = inference_dtype(args.dtype, args.device, args.quantize)
    if args.checkpoint is not None:
        from scratchgpt.weights import load_checkpoint

        loaded = load_checkpoint(
            args.checkpoint, device=args.device, dtype=dtype, quantize=args.quantize
        )
        tokenizer = loaded.tokenizer
        if tokenizer is None:
            if loaded.config.vocab_size != GPT2_VOCAB_SIZE:
                raise CheckpointError(
                    f"{loaded.path}: the checkpoint has no tokenizer.json and its vocabulary "
                    f"({loaded.config.vocab_size} ids) is not GPT-2's; save the checkpoint with "
                    "its tokenizer"
                )
            from scratchgpt.tokenizers import get_tokenizer

            tokenizer = get_tokenizer("gpt2")  # the vocabulary size says it is GPT-2's
        return loaded.model.eval(), tokenizer

    from scratchgpt.config import GPTConfig
    from scratchgpt.model import build_model
    from scratchgpt.tokenizers import get_tokenizer

    cfg = GPTConfig.from_preset(args.preset)
    torch.manual_seed(DEFAULT_PRESET_SEED if args.seed is None else args.seed)
    model = build_model(cfg).to(device=args.device, dtype=dtype).eval()
    return model, get_tokenizer("gpt2")


def run(args: argparse.Namespace) -> int:
    from scratchgpt.generation import (
        SamplingConfig,
        generate_text,
        optimize_for_decoding,
        stream_generate,
    )

    model, tokenizer = _load(args)
    optimize_for_decoding(model)  # the model is only used for inference here
    options: dict[str, Any] = dict(
        max_new_tokens=args.max_new_tokens,
        context_size=args.context_size,
        sampling=SamplingConfig(
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
        ),
        use_cache=not args.no_cache,
        stop_strings=args.stop,
    )
    if args.no_eos:
        options["eos_id"] = None
    out = sys.stdout
    if args.stream:
        pieces = stream_generate(model, tokenizer, args.prompt, **options)
        if not args.no_echo:
            out.write(args.prompt)
            out.flush()
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
    else:
        text = generate_text(model, tokenizer, args.prompt, **options)
        out.write(("" if args.no_echo else args.prompt) + text + "\n")
    out.flush()
    return 0
