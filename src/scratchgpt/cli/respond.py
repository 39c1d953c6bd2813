"""`scratchgpt respond`: answer instruction records with a checkpoint (the book's section 7.7)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scratchgpt.cli.args import fraction, positive_int, probability


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --prompt-style, --device: how respond, chat and evaluate load a model."""
    from scratchgpt.data.instructions import PROMPT_STYLES

    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        required=True,
        help="checkpoint folder or run folder (its newest checkpoint)",
    )
    p.add_argument(
        "--prompt-style",
        choices=sorted(PROMPT_STYLES),
        help="prompt template (default: the one stored in the checkpoint, else alpaca)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")


def load_for_inference(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model in eval mode, tokenizer, prompt style name) for --checkpoint."""
    import torch

    from scratchgpt.errors import ConfigError
    from scratchgpt.generation import optimize_for_decoding
    from scratchgpt.tasks.instruct import checkpoint_style, load_instruct_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    loaded = load_instruct_model(args.checkpoint)
    model = loaded.model.to(args.device).eval()
    optimize_for_decoding(model)
    return model, loaded.tokenizer, checkpoint_style(loaded.metadata, args.prompt_style)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "respond",
        help="answer instruction records with a checkpoint (writes model_response)",
        description=(
            "Generate a response for each record (greedy, stopping at <|endoftext|>, prompt and "
            "'### Response:' marker removed) and write the records with a model_response field "
            "as a JSON list, ready for `scratchgpt evaluate judge`."
        ),
    )
    add_model_flags(p)
    p.add_argument(
        "--data",
        metavar="FILE",
        help="JSON or JSONL instruction records (default: the bundled set)",
    )
    add_record_flags(p, default_split="all")
    p.add_argument(
        "--max-new-tokens", type=positive_int, default=256, metavar="N", help="default: 256"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="default: 8")
    p.add_argument("--out", metavar="FILE", help="output JSON file (default: standard output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def add_record_flags(p: argparse.ArgumentParser, default_split: str) -> None:
    """--split/--train-frac/--test-frac/--limit/--*-field: which records `select_records` takes
    (split as finetune-instruct splits them)."""
    p.add_argument(
        "--split",
        choices=["all", "train", "test", "val"],
        default=default_split,
        help=f"which part of the records (split as finetune-instruct does; default: {default_split})",
    )
    p.add_argument("--train-frac", type=probability, default=0.85, help="default: 0.85")
    p.add_argument("--test-frac", type=fraction, default=0.10, help="default: 0.10")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N records")
    for name in ("instruction", "input", "output"):
        p.add_argument(f"--{name}-field", metavar="NAME", help=f"field holding the {name}")


def select_records(args: argparse.Namespace) -> list[dict[str, str]]:
    """The records of --data, --split and --limit."""
    from scratchgpt.data.instructions import load_instruction_records, split_records
    from scratchgpt.errors import DataError

    fields = {
        n: getattr(args, f"{n}_field")
        for n in ("instruction", "input", "output")
        if getattr(args, f"{n}_field", None)
    }
    records = load_instruction_records(args.data, fields=fields)
    if args.split != "all":
        train, test, val = split_records(records, args.train_frac, args.test_frac)
        records = {"train": train, "test": test, "val": val}[args.split]
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise DataError(
            f"no records to use: the {args.split} split of {args.data or 'the bundled data'} is "
            "empty; choose another --split or other fractions"
        )
    return records


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from scratchgpt.errors import DataError
    from scratchgpt.tasks.instruct import generate_responses, write_responses

    if args.out and Path(args.out).is_dir():
        raise DataError(f"--out {args.out}: is a folder; name a JSON file to write")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    records = select_records(args)
    model, tokenizer, style = load_for_inference(args)
    out = generate_responses(
        model,
        tokenizer,
        records,
        style,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    if args.out:
        write_responses(args.out, out, overwrite=args.overwrite)
        print(f"wrote {len(out)} responses to {args.out} (prompt style {style})", file=sys.stderr)
    else:
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0
