"""`scratchgpt download NAME`: fetch a pretrained model (GPT-2, Llama 3.x, Qwen3) from the
Hugging Face hub."""

from __future__ import annotations

import argparse
import sys
import textwrap


def _names_help() -> str:
    from scratchgpt.weights.hub_names import names_by_family

    return "\n".join(
        textwrap.fill(", ".join(names), 80, initial_indent=f"  {family + ':':11s}",
                      subsequent_indent=" " * 13)
        for family, names in names_by_family().items()
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download",
        help="download a pretrained GPT-2, Llama 3.x or Qwen3 model (needs a network)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Download a pretrained model from the Hugging Face hub into the cache\n"
            "($SCRATCHGPT_CACHE/models/NAME, default ~/.cache/scratchgpt/models/NAME), check\n"
            "the sha256 of its weights, and print the folder. Afterwards NAME works wherever a\n"
            "model path does. Interrupted downloads resume.\n\n"
            "Names (the hub's repository names work too, e.g. gpt2, Qwen/Qwen3-0.6B):\n"
            f"{_names_help()}\n\n"
            "Files: config.json and model.safetensors (or model.safetensors.index.json and\n"
            "every shard it names); for Llama 3.x, Qwen3 and Gemma 3 also tokenizer.json,\n"
            "tokenizer_config.json, and generation_config.json, special_tokens_map.json,\n"
            "chat_template.jinja where the repository has them.\n\n"
            "Llama and Gemma models are gated: accept Meta's or Google's license on the\n"
            "model's page on huggingface.co, then log in with `hf auth login` or set HF_TOKEN."
        ),
    )
    p.add_argument(
        "name", metavar="NAME", help="a model name from the list above, or its hub repository"
    )
    p.add_argument("--dir", default=None, help="download into this folder instead of the cache")
    p.add_argument("--force", action="store_true", help="download again even if already complete")
    p.set_defaults(func=run)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.weights.hub import (
        check_download_dir,
        download_model,
        hub_model,
        is_downloaded,
        model_cache_dir,
    )

    model = hub_model(args.name)
    target = args.dir if args.dir is not None else model_cache_dir(model.name)
    check_download_dir(target)
    if args.force or not is_downloaded(target):
        _say(f"downloading {model.name} ({model.repo}) to {target}")
    else:
        _say(f"{model.name} is already downloaded in {target} (use --force to fetch it again)")
    path = download_model(model.name, args.dir, force=args.force, log=_say)
    print(path)
    return 0
