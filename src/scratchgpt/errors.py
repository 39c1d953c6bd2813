"""Exceptions that carry a message meant for the user.

Every error that bad input can cause is one of these: the CLI prints its message (which says what
was wrong, where, and what to do) instead of a traceback. They subclass ValueError so that code
written against plain Python conventions still catches them.

Advice that names an option is spelled where it is read: an error may carry an :class:`Advice`
with the Python spelling (``overwrite=True``, in ``str(error)``) and the command-line one
(``--overwrite``, printed by the CLI only when the command has that flag).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass


@dataclass(frozen=True)
class Advice:
    """What to do, in two spellings. ``python`` ends ``str(error)``; on the command line
    ``cli`` replaces it when the command has ``flag`` (or ``flag`` is None), and otherwise the
    advice is left out (it would name an option that is not there). ``sep`` joins it to the
    message."""

    python: str
    cli: str | None = None
    flag: str | None = None
    sep: str = "; "


class _Advised(Exception):
    """Keeps the message and its advice apart, so the CLI can respell the advice."""

    def __init__(self, message: str = "", advice: Advice | None = None) -> None:
        self.message = message
        self.advice = advice
        # Only the whole text is an argument: pickling (worker processes) rebuilds from args
        # and restores message/advice from __dict__.
        super().__init__(message if advice is None else f"{message}{advice.sep}{advice.python}")


def command_line_message(error: BaseException, flags: Container[str]) -> str:
    """``error``'s text for a command whose flags are ``flags``: advice in command-line words,
    or none where the command lacks the flag it names."""
    advice = getattr(error, "advice", None)
    message = getattr(error, "message", None)
    if not isinstance(advice, Advice) or not isinstance(message, str):
        return str(error)
    if advice.cli is None or (advice.flag is not None and advice.flag not in flags):
        return message
    return f"{message}{advice.sep}{advice.cli}"


class ScratchGPTError(_Advised, ValueError):
    """Base class: bad input or configuration, explained for the user."""


class DataError(ScratchGPTError):
    """A data file or corpus is missing, malformed or too small."""


class TokenizerError(ScratchGPTError):
    """A tokenizer was misconfigured or given text it cannot encode."""


class ConfigError(ScratchGPTError):
    """A model or training configuration is invalid."""


class CheckpointError(ScratchGPTError):
    """A checkpoint or weights file is missing, corrupt or does not match the model."""


class OutputError(ScratchGPTError):
    """An output could not be written: the disk is full, the file system is read-only or
    permission is denied. The writer has removed its temporary files; what was there before is
    unchanged. ``path`` is the output, ``errno`` the operating system's error number."""

    def __init__(
        self,
        message: str,
        advice: Advice | None = None,
        *,
        path: str | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message, advice)
        self.path = path
        self.errno = errno


class OutputExistsError(_Advised, FileExistsError):
    """An output file or folder exists and replacing it was not asked for."""


# The one spelling of "replace what is there", for both audiences.
OVERWRITE_ADVICE = Advice(
    "pass overwrite=True to replace it", "pass --overwrite to replace it", "--overwrite"
)
