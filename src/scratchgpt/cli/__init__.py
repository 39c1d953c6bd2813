"""`scratchgpt <command>`: a thin shell over functions users can also call from Python.

Each command lives in its own module here with two functions: ``register(subparsers)`` adds its
parser, and the parser's ``func`` default runs it. Heavy imports (torch) happen inside the command,
so ``scratchgpt --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from scratchgpt import __version__
from scratchgpt.cli.args import CommandParser, command_flags, one_line_warnings
from scratchgpt.errors import ScratchGPTError, command_line_message
from scratchgpt.fileio import output_error

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
    "scratchgpt.cli.finetune_dpo",
    "scratchgpt.cli.respond",
    "scratchgpt.cli.chat",
    "scratchgpt.cli.serve",
    "scratchgpt.cli.evaluate",
    "scratchgpt.cli.download",
    "scratchgpt.cli.export",
    "scratchgpt.cli.info",
]

# Commands that load a checkpoint's weights, and so take --no-verify.
LOADS_WEIGHTS = [
    "pretrain", "generate", "finetune-classifier", "classify", "finetune-instruct", "finetune-dpo",
    "respond", "chat", "serve", "evaluate loss", "evaluate choice", "export",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="scratchgpt",
        description="Build, train, fine-tune and run a GPT-style LLM from scratch.",
    )
    parser.add_argument("--version", action="version", version=f"scratchgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        _add_threads_option(command)
    for name in LOADS_WEIGHTS:
        _subcommand(parser, name).add_argument(
            "--no-verify",
            action="store_true",
            help="skip checking the weight files against the checksums their checkpoint "
            "recorded when saved (faster loading of big models; also SCRATCHGPT_VERIFY_WEIGHTS=0)",
        )
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of ``name`` ("generate", or "evaluate loss" for a nested one)."""
    for word in name.split():
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subs.choices[word]
    return parser


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    """--threads N on a command (and its subcommands): torch's CPU threads, set before the
    command runs (default: SCRATCHGPT_THREADS, else the cores not busy now)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_threads_option(child)
            return
    p.add_argument(
        "--threads",
        metavar="N",
        help="CPU threads for torch (default: $SCRATCHGPT_THREADS, else the cores that are not "
        "busy now; see docs/benchmarks.md)",
    )
    func = p.get_default("func")
    if func is not None:
        p.set_defaults(func=functools.partial(_with_threads, func))


def _with_threads(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from scratchgpt.threads import parse_threads, set_threads

    threads = None if args.threads is None else parse_threads(args.threads, "--threads")
    set_threads(threads)
    return func(args)


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
    if getattr(args, "no_verify", False):
        # An environment variable rather than an argument: it reaches every loader the command
        # uses, and torchrun's other ranks, without threading a flag through each of them.
        os.environ["SCRATCHGPT_VERIFY_WEIGHTS"] = "0"
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
    except OSError as e:  # a full or read-only disk that no writer reported itself
        disk = output_error(e)
        if disk is None:
            raise
        print(f"error{where}: {disk}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``scratchgpt`` console script: :func:`main`, then the exit a torchrun rank needs
    (see ``scratchgpt.training.distributed.exit_process``)."""
    # Imported here, not at the top: `scratchgpt --help` must not pay for importing torch.
    from scratchgpt.training.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    entry()
