"""`scratchgpt finetune-dpo`: preference tuning with DPO (the book's chapter 7 bonus) on the
shared loop.

Flags are generated from the recipe's config sections (model, data, dpo, train), with the preset
book-dpo (the book's notebook settings) as the defaults, exactly as `finetune-instruct` does.
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

DEFAULT_PRESET = "book-dpo"


def register(subparsers: Any) -> None:
    from scratchgpt.tasks.dpo.config import DPOConfig
    from scratchgpt.training.config import preset_mapping

    p = subparsers.add_parser(
        "finetune-dpo",
        help="preference tuning with DPO (chapter 7 bonus): train, then answer the test split",
        description=(
            "Preference-tune an instruction model with Direct Preference Optimization (the "
            "book's ch07/04 notebook): records with chosen/rejected responses split 85/10/5 in "
            "file order, the policy trained against a frozen reference (a copy of the starting "
            "model, or with --lora-rank the same model with its adapters off), the book's "
            f"settings (preset {DEFAULT_PRESET}: beta 0.1, AdamW 5e-6, weight decay 0.01, 1 epoch, "
            "batch 8); DPO loss, chosen/rejected rewards, reward margin and accuracy on train "
            "and validation data at each evaluation, then greedy responses for the test split "
            "in OUT/responses.json."
        ),
        epilog=(
            "examples:\n"
            "  scratchgpt finetune-dpo --checkpoint runs/sft --out runs/dpo\n"
            "  scratchgpt finetune-dpo --checkpoint runs/sft --data prefs.jsonl "
            "--instruction-field prompt --beta 0.5 --out runs/dpo\n"
            "  scratchgpt finetune-dpo --checkpoint qwen3-0.6b --lora-rank 16 --out runs/qwen-dpo\n"
            "  scratchgpt finetune-dpo --out runs/dpo --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_preset_flags(p, "dpo", DEFAULT_PRESET)
    add_run_flags(p)
    defaults = preset_mapping(DEFAULT_PRESET)
    add_config_flags(
        p,
        ("model",),
        config=DPOConfig,
        defaults=defaults,
        title="policy model (give --checkpoint or --gpt2) and how it is tuned",
    )
    add_config_flags(p, ("data", "dpo"), config=DPOConfig, defaults=defaults)
    unused = ("train.sample_prompt",)  # the sample answers the first validation record
    add_config_flags(
        p, ("train",), config=DPOConfig, defaults=defaults, title="training", skip=unused
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.dpo.config import DPOConfig
    from scratchgpt.tasks.dpo.recipe import run as run_recipe

    cfg = resolve_recipe_config(DPOConfig, args, DEFAULT_PRESET)
    if args.print_config:
        return print_config(cfg)
    result = run_recipe(cfg, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv)
    if result.train.status == "interrupted":
        print(
            f"interrupted at step {result.train.steps}; checkpoint saved in "
            f"{result.train.last_checkpoint}. Continue with: scratchgpt finetune-dpo "
            f"--out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0
