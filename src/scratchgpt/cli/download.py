"""`scratchgpt download NAME`: fetch pretrained GPT-2 weights from the Hugging Face hub."""

from __future__ import annotations

import argparse
import sys

NAMES = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download",
        help="download pretrained GPT-2 weights (needs a network)",
        description=(
            "Download OpenAI's GPT-2 weights (config.json + model.safetensors, from the Hugging "
            "Face hub) into the cache ($SCRATCHGPT_CACHE/models/NAME, default "
            "~/.cache/scratchgpt/models/NAME), check their sha256, and print the folder. "
            "Afterwards NAME works wherever a model path does. Interrupted downloads resume."
        ),
    )
    p.add_argument(
        "name", metavar="NAME", help=f"one of: {', '.join(NAMES)} (hub names such as gpt2 work too)"
    )
    p.add_argument("--dir", default=None, help="download into this folder instead of the cache")
    p.add_argument("--force", action="store_true", help="download again even if already complete")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.weights.hub import (
        check_download_dir,
        download_gpt2,
        hub_repo,
        is_downloaded,
        model_cache_dir,
    )

    repo = hub_repo(args.name)
    target = args.dir if args.dir is not None else model_cache_dir(args.name)
    check_download_dir(target)
    if args.force or not is_downloaded(target):
        print(f"downloading {repo} (config.json, model.safetensors) to {target}", file=sys.stderr)
    else:
        print(f"{args.name} is already downloaded (use --force to fetch it again)", file=sys.stderr)
    path = download_gpt2(args.name, args.dir, force=args.force)
    print(path)
    return 0
