"""`scratchgpt finetune-classifier`: turn a GPT into a text classifier (the book's chapter 6).

Flags are generated from the recipe's config sections (model, data, classify, train), with the
preset book-ch6 (the book's settings) as the defaults, exactly as `scratchgpt pretrain` does.
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

DEFAULT_PRESET = "book-ch6"


def register(subparsers: Any) -> None:
    from scratchgpt.tasks.classify.config import ClassifyConfig
    from scratchgpt.training.config import preset_mapping

    p = subparsers.add_parser(
        "finetune-classifier",
        help="fine-tune a GPT as a text classifier (spam or any labelled data; LoRA optional)",
        description=(
            "Replace the GPT's output head with Linear(emb_dim, classes) and train it on labelled "
            "texts (the book's chapter 6; LoRA with --trainable lora, or appendix E's whole recipe "
            "with --preset book-appendix-e). Defaults are the "
            f"book's (preset {DEFAULT_PRESET}): batch 8, lr 5e-5, 5 epochs, last block + final "
            "norm + head trained. The run folder gets config.yaml, checkpoints that resume "
            "exactly, metrics.jsonl, loss/accuracy plots and classification_report.json (test "
            "accuracy, confusion matrix, per-class P/R/F1)."
        ),
        epilog=(
            "examples:\n"
            "  scratchgpt finetune-classifier --gpt2 gpt2-small --data spam --out runs/spam\n"
            "  scratchgpt finetune-classifier --checkpoint runs/ch5 --trainable lora --out runs/lora\n"
            "  scratchgpt finetune-classifier --random-init mini --data reviews.csv \\\n"
            "      --text-column review --label-column sentiment --out runs/reviews\n"
            "  scratchgpt finetune-classifier --out runs/spam --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_preset_flags(p, "classify", DEFAULT_PRESET)
    add_run_flags(p)
    defaults = preset_mapping(DEFAULT_PRESET)
    add_config_flags(p, ("model",), config=ClassifyConfig, title="starting model (give one)")
    add_config_flags(p, ("data", "classify"), config=ClassifyConfig, defaults=defaults)
    title = "training (as scratchgpt pretrain)"
    # A classifier writes no text samples: the sampling fields would only mislead.
    unused = ("train.sample_interval", "train.sample_prompt", "train.sample_tokens")
    add_config_flags(
        p, ("train",), config=ClassifyConfig, defaults=defaults, title=title, skip=unused
    )
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Any:
    """The ClassifyConfig: the preset (or a resumed run's saved config), a file, then flags."""
    from scratchgpt.tasks.classify.config import ClassifyConfig

    return resolve_recipe_config(ClassifyConfig, args, DEFAULT_PRESET)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.classify.recipe import run as run_recipe

    cfg = resolve_config(args)
    if args.print_config:
        return print_config(cfg)
    result = run_recipe(cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv)
    if result.train_result.status == "interrupted":
        print(
            f"interrupted at step {result.train_result.steps}; continue with: scratchgpt "
            f"finetune-classifier --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0
