"""`scratchgpt finetune-classifier`: turn a GPT into a text classifier (the book's chapter 6)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from scratchgpt.cli.pretrain import add_config_flags, add_run_flags, config_overrides

# ClassifyConfig fields and their flags (defaults live in the dataclass; SUPPRESS keeps
# "not given" distinguishable so a resumed run's saved settings stay in force).
_CLASSIFY_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("checkpoint", {"metavar": "DIR", "help": "start from a scratchgpt checkpoint or run folder"}),
    (
        "gpt2",
        {
            "metavar": "NAME|DIR",
            "help": "start from GPT-2 weights (gpt2-small, ... or a "
            "Hugging Face folder; names must be downloaded: scratchgpt download)",
        },
    ),
    (
        "random_init",
        {
            "metavar": "PRESET",
            "help": "start from random weights of a model preset (gpt2-small, mini, tiny, ...)",
        },
    ),
    (
        "data",
        {
            "metavar": "spam|FILE",
            "help": "'spam' (the bundled SMS Spam Collection, split as "
            "the book) or a CSV/TSV/JSONL file (default: spam)",
        },
    ),
    (
        "format",
        {"choices": ["csv", "tsv", "jsonl"], "help": "format of FILE (default: its suffix)"},
    ),
    ("text_column", {"metavar": "NAME", "help": "column/field with the text (default: text)"}),
    ("label_column", {"metavar": "NAME", "help": "column/field with the label (default: label)"}),
    (
        "split_column",
        {
            "metavar": "NAME",
            "help": "column naming each row's split (train, val, "
            "test); without it the rows are shuffled and split by fractions",
        },
    ),
    (
        "labels",
        {
            "metavar": "A,B,...",
            "help": "the label set, in id order (default: the sorted distinct labels)",
        },
    ),
    ("train_frac", {"type": float, "metavar": "X", "help": "training share (default 0.7)"}),
    ("val_frac", {"type": float, "metavar": "X", "help": "validation share (default 0.1)"}),
    (
        "split_seed",
        {"type": int, "metavar": "N", "help": "seed of the shuffle before splitting (default 123)"},
    ),
    (
        "max_length",
        {
            "type": int,
            "metavar": "N",
            "help": "pad/truncate texts to N tokens (default: the longest training text)",
        },
    ),
    (
        "trainable",
        {
            "choices": ["last-blocks", "all", "head", "lora"],
            "help": "what to train: "
            "the last --train-blocks blocks + final norm + head (default, the book), all "
            "layers, the head only, or LoRA adapters",
        },
    ),
    (
        "train_blocks",
        {"type": int, "metavar": "N", "help": "blocks trained with last-blocks (default 1)"},
    ),
    ("lora_rank", {"type": int, "metavar": "N", "help": "LoRA rank (default 16)"}),
    ("lora_alpha", {"type": float, "metavar": "X", "help": "LoRA alpha (default 16)"}),
    (
        "lora_targets",
        {
            "metavar": "LIST",
            "help": "comma list of attention, feed_forward, head (default: all three)",
        },
    ),
    (
        "drop_rate",
        {
            "type": float,
            "metavar": "X",
            "help": "dropout rate while fine-tuning (default: the model's)",
        },
    ),
]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune-classifier",
        help="fine-tune a GPT as a text classifier (spam or any labelled data; LoRA optional)",
        description=(
            "Replace the GPT's output head with Linear(emb_dim, classes) and train it on labelled "
            "texts (the book's chapter 6; appendix E with --trainable lora). Defaults are the "
            "book's: batch 8, lr 5e-5, 5 epochs, last block + final norm + head trained. The run "
            "folder gets checkpoints that resume exactly, metrics.jsonl, loss/accuracy plots and "
            "classification_report.json (test accuracy, confusion matrix, per-class P/R/F1)."
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
    group = p.add_argument_group("model and data")
    for name, kwargs in _CLASSIFY_FLAGS:
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"clf__{name}", default=argparse.SUPPRESS, **kwargs
        )
    add_run_flags(p)
    add_config_flags(p, ("train",), title="training (as scratchgpt pretrain)")
    p.set_defaults(func=run)


def _classify_given(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for key, value in vars(args).items():
        if key.startswith("clf__"):
            name = key[len("clf__") :]
            if name in ("labels", "lora_targets"):
                value = [v.strip() for v in value.split(",") if v.strip()]
            out[name] = value
    return out


def resolve_configs(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(ClassifyConfig, the TrainConfig fields to set) from a resumed run's saved settings and
    the flags."""
    from scratchgpt.tasks.classify import ClassifyConfig, read_finetune_config

    clf: dict[str, Any] = {}
    train: dict[str, Any] = {}
    saved = read_finetune_config(args.out) if args.resume else None
    if saved:
        clf.update(saved.get("classify") or {})
        train.update(saved.get("train") or {})
    given = _classify_given(args)
    if any(given.get(k) for k in ("checkpoint", "gpt2", "random_init")):
        for k in ("checkpoint", "gpt2", "random_init"):
            clf.pop(k, None)
    clf.update(given)
    train.update({k.split(".", 1)[1]: v for k, v in config_overrides(args).items()})
    return ClassifyConfig(**clf), train


def run(args: argparse.Namespace) -> int:
    from scratchgpt.tasks.classify import finetune_classifier

    cfg, train = resolve_configs(args)
    if args.print_config:
        sys.stdout.write(
            json.dumps({"classify": dataclasses.asdict(cfg), "train": train}, indent=2)
        )
        sys.stdout.write("\n")
        return 0
    result = finetune_classifier(
        cfg, train, args.out, overwrite=args.overwrite, resume=args.resume, argv=sys.argv
    )
    if result.train_result.status == "interrupted":
        print(
            f"interrupted at step {result.train_result.steps}; continue with: scratchgpt "
            f"finetune-classifier --out {args.out} --resume",
            file=sys.stderr,
        )
        return 130
    return 0
