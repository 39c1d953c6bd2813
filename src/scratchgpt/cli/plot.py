"""`scratchgpt plot RUN_DIR`: loss and learning-rate plots of a training run."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot",
        help="plot a training run's loss and learning rate",
        description=(
            "Read RUN_DIR/metrics.jsonl and write loss.png (loss against steps, tokens seen on "
            "the top axis) and lr.png (learning rate against steps) into the run folder."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `scratchgpt pretrain`")
    p.add_argument("--pdf", action="store_true", help="also write PDF versions")
    p.add_argument("--out", metavar="DIR", help="write the images here instead of RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.training.plots import plot_run

    for path in plot_run(args.run_dir, pdf=args.pdf, out_dir=args.out):
        print(path)
    return 0
