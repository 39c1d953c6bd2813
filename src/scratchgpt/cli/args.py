"""Argument types shared by the commands: numbers are checked where they are parsed, so a bad
value is a one-line usage error (exit code 2) before any model is loaded.

Each helper is an argparse ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError``, whose text argparse shows after ``argument --flag:``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn


def _number(text: str, kind: type, what: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        what = f"an integer >= {low}"
        value = int(_number(text, int, what))
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(_number(text, float, "a number > 0"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = float(_number(text, float, "a number >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]: top-p, a share of the data."""
    value = float(_number(text, float, "a number in (0, 1]"))
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = float(_number(text, float, "a number in [0, 1)"))
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def port(text: str) -> int:
    """A TCP port: 1 to 65535, or 0 for any free port."""
    value = int(_number(text, int, "a port number (1-65535, or 0 for any free port)"))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number (1-65535, or 0 for any free port), got {text}"
        )
    return value


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``error: ...``, exit code 2 (argparse
    prints the whole usage first, dozens of lines for the training commands; ``--help`` still
    shows it)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """--temperature, --top-k and --top-p, checked where they are parsed (generate, chat)."""
    p.add_argument(
        "--temperature",
        type=nonnegative_float,
        default=0.0,
        help="0 = greedy (default); > 0 samples",
    )
    p.add_argument(
        "--top-k", type=positive_int, metavar="K", help="sample only from the K likeliest"
    )
    p.add_argument("--top-p", type=probability, metavar="P", help="nucleus sampling: keep mass P")


def command_flags(parser: argparse.ArgumentParser, command: str | None) -> frozenset[str]:
    """Every option string of ``command`` (its sub-commands included), so an error's advice
    names a flag only where the command has it."""

    def walk(p: argparse.ArgumentParser) -> set[str]:
        flags: set[str] = set()
        for action in p._actions:
            flags.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    flags |= walk(sub)
        return flags

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return frozenset(walk(action.choices[command]))
    return frozenset()


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    if category is not UserWarning:
        text = f"{category.__name__}: {text}"
    with contextlib.suppress(OSError):  # stderr closed: a note is not worth a traceback
        (file or sys.stderr).write(f"note: {text}\n")


def one_line_warnings() -> None:
    """Show warnings as one ``note: ...`` line on stderr: a command's user needs the message,
    not the library's file name, line number and source line."""
    warnings.showwarning = _show_warning


def add_quantize_flag(p: argparse.ArgumentParser) -> None:
    """--quantize int8: weight-only int8 linear layers for inference (scratchgpt.model.quantize)."""
    p.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="store the linear layers as int8 weights with per-channel scales (weight-only; "
        "embeddings and norms keep their precision; a checkpoint saved quantized needs no flag)",
    )


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
    """--dtype auto|fp32|bf16: the float dtype of the weights (and activations) for inference."""
    p.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="weights and activations for inference; auto (default): bf16 where the device "
        "computes it natively (CPUs with AVX-512 BF16 or AMX, recent GPUs), which halves the "
        "bytes read per token, else fp32; with --quantize int8 on a CPU, fp32 activations",
    )


def inference_dtype(name: str, device: str, quantize: str | None = None) -> Any:
    """The torch dtype for ``--dtype name`` on ``device`` (see :func:`add_dtype_flag`).

    With int8 weights on a CPU, auto picks fp32 activations when the project's int8 kernel is
    available: it reads int8 weights as fast for fp32 inputs as for bf16 ones, so fp32 costs
    nothing and keeps more precision (benchmarks/generation.py)."""
    import torch

    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    else:
        from scratchgpt.model import cpu_kernels
        from scratchgpt.training.setup import cpu_has_fast_bf16

        if quantize == "int8" and cpu_kernels.load() is not None:
            return torch.float32
        native = cpu_has_fast_bf16()
    return torch.bfloat16 if native else torch.float32
