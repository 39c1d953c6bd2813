"""`scratchgpt <command>`: a thin shell over functions users can also call from Python.

Each command lives in its own module here with two functions: ``register(subparsers)`` adds its
parser, and the parser's ``func`` default runs it. Heavy imports (torch) happen inside the command,
so ``scratchgpt --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from scratchgpt import __version__
from scratchgpt.cli.args import CommandParser, command_flags, one_line_warnings
from scratchgpt.errors import ScratchGPTError, command_line_message

# Order here is the order in `scratchgpt --help`: the pipeline, left to right.
COMMAND_MODULES = [
    "scratchgpt.cli.data",
    "scratchgpt.cli.tokenize",
    "scratchgpt.cli.train_tokenizer",
    "scratchgpt.cli.prepare",
    "scratchgpt.cli.pretrain",
    "scratchgpt.cli.plot",
    "scratchgpt.cli.generate",
    "scratchgpt.cli.finetune_classifier",
    "scratchgpt.cli.classify",
    "scratchgpt.cli.finetune_instruct",
    "scratchgpt.cli.respond",
    "scratchgpt.cli.chat",
    "scratchgpt.cli.serve",
    "scratchgpt.cli.evaluate",
    "scratchgpt.cli.download",
    "scratchgpt.cli.info",
]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="scratchgpt",
        description="Build, train, fine-tune and run a GPT-style LLM from scratch.",
    )
    parser.add_argument("--version", action="version", version=f"scratchgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rank = _rank()
    # Under torchrun every rank runs this same command: only rank 0 speaks on stdout, and an
    # error says which rank it came from.
    where = f" (rank {rank})" if "LOCAL_RANK" in os.environ else ""
    one_line_warnings()
    try:
        if rank != 0:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except (ScratchGPTError, FileExistsError) as e:
        text = command_line_message(e, command_flags(parser, args.command))
        print(f"error{where}: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The ``scratchgpt`` console script: :func:`main`, then the exit a torchrun rank needs
    (see ``scratchgpt.training.distributed.exit_process``)."""
    # Imported here, not at the top: `scratchgpt --help` must not pay for importing torch.
    from scratchgpt.training.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
