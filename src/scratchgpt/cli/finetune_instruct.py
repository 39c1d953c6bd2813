"""`scratchgpt finetune-instruct`: instruction fine-tuning (the book's chapter 7) on the shared loop.

Flags are generated from the recipe's config sections (model, data, instruct, train), with the
preset book-ch7 (the book's settings) as the defaults, exactly as `scratchgpt pretrain` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scratchgpt.cli.pretrain import (
    add_config_flags,
    add_preset_flags,
    add_run_flags,
    print_config,
    resolve_recipe_config,
)

DEFAULT_PRESET = "book-ch7"


def register(subparsers: Any) -> None:
    from scratchgpt.tasks.instruct.config import InstructConfig
    from scratchgpt.training.config import preset_mapping

    p = subparsers.add_parser(
        "finetune-instruct",
        help="instruction fine-tuning (chapter 7): train, then answer the test split",
        description=(
            "Fine-tune a GPT to follow instructions (the book's chapter 7): records split 85/10/5 "
            "in file order into train/test/validation, the book's settings (preset "
            f"{DEFAULT_PRESET}: AdamW 5e-5, weight decay 0.1, 2 epochs, batch 8), validation loss "
            "and a sample response at each evaluation, then greedy responses for the test split "
            "in OUT/responses.json."
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
    add_preset_flags(p, "instruct", DEFAULT_PRESET)
    add_run_flags(p)
    defaults = preset_mapping(DEFAULT_PRESET)
    add_config_flags(
        p,
        ("model",),
        config=InstructConfig,
        defaults=defaults,
        title="base model (give --checkpoint or --gpt2) and how it is fine-tuned",
    )
    add_config_flags(p, ("data", "instruct"), config=InstructConfig, defaults=defaults)
    title = "training (as `scratchgpt pretrain`; --sample-interval follows --eval-interval)"
    # The sample response answers the first validation record, not a fixed prompt.
    unused = ("train.sample_prompt",)
    add_config_flags(
        p, ("train",), config=InstructConfig, defaults=defaults, title=title, skip=unused
    )
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Any:
    """The InstructConfig: the preset (or a resumed run's saved config), a file, then flags."""
    from scratchgpt.tasks.instruct.config import InstructConfig

    return resolve_recipe_config(InstructConfig, args, DEFAULT_PRESET)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.instruct.recipe import run as run_recipe

    cfg = resolve_config(args)
    if args.print_config:
        return print_config(cfg)
    result = run_recipe(cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv)
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
