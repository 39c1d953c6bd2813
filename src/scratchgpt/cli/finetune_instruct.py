"""`scratchgpt finetune-instruct`: instruction fine-tuning (the book's chapter 7) on the shared loop.

The training flags are those of `scratchgpt pretrain` (one per TrainConfig field, same names and
meaning); their defaults here are the book's chapter-7 settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scratchgpt.cli.pretrain import add_config_flags, add_run_flags, config_overrides

_S = argparse.SUPPRESS


def register(subparsers: Any) -> None:
    from scratchgpt.data.instructions import PROMPT_STYLES
    from scratchgpt.training.config import BOOK_CH7_TRAIN

    p = subparsers.add_parser(
        "finetune-instruct",
        help="instruction fine-tuning (chapter 7): train, then answer the test split",
        description=(
            "Fine-tune a GPT to follow instructions (the book's chapter 7): records split 85/10/5 "
            "in file order into train/test/validation, the book's defaults (AdamW 5e-5, weight "
            "decay 0.1, 2 epochs, batch 8), validation loss and a sample response at each "
            "evaluation, then greedy responses for the test split in OUT/responses.json."
        ),
        epilog=(
            "examples:\n"
            "  scratchgpt finetune-instruct --gpt2 gpt2-medium --out runs/sft\n"
            "  scratchgpt finetune-instruct --checkpoint runs/pre --data my.jsonl --out runs/sft "
            "--mask-prompt\n"
            "  scratchgpt finetune-instruct --out runs/sft --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="DIR", default=_S, help="base model checkpoint")
    src.add_argument(
        "--gpt2",
        metavar="NAME",
        default=_S,
        help="GPT-2 weights from the download cache (gpt2-small, gpt2-medium, ...)",
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        default=_S,
        help="JSON or JSONL instruction records (default: the bundled 1,100 records)",
    )
    for name in ("instruction", "input", "output"):
        p.add_argument(
            f"--{name}-field",
            metavar="NAME",
            default=_S,
            help=f"the records' field holding the {name} (default: {name})",
        )
    p.add_argument(
        "--prompt-style",
        choices=sorted(PROMPT_STYLES),
        default=_S,
        help="prompt template, stored in the checkpoint (default: alpaca, the book's)",
    )
    p.add_argument("--train-frac", type=float, default=_S, help="default: 0.85")
    p.add_argument("--test-frac", type=float, default=_S, help="default: 0.10 (the rest validates)")
    p.add_argument(
        "--mask-prompt",
        action=argparse.BooleanOptionalAction,
        default=_S,
        help="leave the prompt tokens out of the loss (exercise 7.2; default: off, as the book)",
    )
    p.add_argument(
        "--allowed-max-length",
        type=int,
        metavar="N",
        default=_S,
        help="truncate examples to N tokens (default: the model's context length)",
    )
    p.add_argument("--response-tokens", type=int, metavar="N", default=_S, help="default: 256")
    p.add_argument("--response-batch-size", type=int, metavar="N", default=_S, help="default: 8")
    p.add_argument(
        "--responses",
        action=argparse.BooleanOptionalAction,
        default=_S,
        help="answer the test split into OUT/responses.json after training (default: on)",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        metavar="R",
        default=_S,
        help="train LoRA adapters of rank R (appendix E) on a frozen model instead of every "
        "weight (default: 0, full fine-tuning; the book's appendix uses 16)",
    )
    p.add_argument("--lora-alpha", type=float, metavar="X", default=_S, help="default: 16")
    add_run_flags(p)
    add_config_flags(
        p, ("train",), defaults=BOOK_CH7_TRAIN, title="training (as `scratchgpt pretrain`)"
    )
    p.set_defaults(func=run)


_PLAIN = {
    "checkpoint": "checkpoint",
    "gpt2": "gpt2",
    "data": "data",
    "prompt_style": "style",
    "train_frac": "train_frac",
    "test_frac": "test_frac",
    "mask_prompt": "mask_prompt",
    "allowed_max_length": "allowed_max_length",
    "response_tokens": "response_tokens",
    "response_batch_size": "response_batch_size",
    "responses": "responses",
    "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha",
}


def resolve_config(args: argparse.Namespace) -> Any:
    """The InstructConfig: the saved one of a resumed run (or the defaults), then the flags."""
    from scratchgpt.tasks.instruct import INSTRUCT_CONFIG_FILE, InstructConfig

    given = vars(args)
    saved = Path(args.out) / INSTRUCT_CONFIG_FILE
    base: dict[str, Any] = {}
    if args.resume and saved.is_file():
        from scratchgpt.fileio import read_json

        base = dict(read_json(saved))
        if "checkpoint" in given or "gpt2" in given:
            base.pop("checkpoint", None)
            base.pop("gpt2", None)
    for flag, key in _PLAIN.items():
        if flag in given:
            base[key] = given[flag]
    fields = dict(base.get("fields") or {})
    for name in ("instruction", "input", "output"):
        if f"{name}_field" in given:
            fields[name] = given[f"{name}_field"]
    base["fields"] = fields
    train = dict(base.get("train") or {})
    if not train:
        from scratchgpt.tasks.instruct import BOOK_TRAIN_DEFAULTS

        train = dict(BOOK_TRAIN_DEFAULTS)
    overrides = {k.split(".", 1)[1]: v for k, v in config_overrides(args).items()}
    # Samples follow the evaluations unless their interval is set on its own.
    if "eval_interval" in overrides and "sample_interval" not in overrides:
        overrides["sample_interval"] = overrides["eval_interval"]
    train.update(overrides)
    base["train"] = train
    if base.get("checkpoint") is None and base.get("gpt2") is None:
        from scratchgpt.errors import ConfigError

        raise ConfigError(
            "no base model: give --checkpoint DIR or --gpt2 NAME (or --resume a run in --out)"
        )
    return InstructConfig.from_dict(base, source="command line")


def run(args: argparse.Namespace) -> int:
    import json

    from scratchgpt.tasks.instruct import finetune_instruct

    cfg = resolve_config(args)
    if args.print_config:
        sys.stdout.write(json.dumps(cfg.to_dict(), indent=2) + "\n")
        return 0
    result = finetune_instruct(
        cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv
    )
    if result.train.status == "interrupted":
        print(
            f"interrupted at step {result.train.steps}; checkpoint saved in "
            f"{result.train.last_checkpoint}. Continue with: scratchgpt finetune-instruct "
            f"--out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    if result.initial_val_loss is not None and result.val_loss is not None:
        print(f"validation loss: {result.initial_val_loss:.4f} before, {result.val_loss:.4f} after")
    return 0
