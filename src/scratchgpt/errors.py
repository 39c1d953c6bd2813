"""Exceptions that carry a message meant for the user.

Every error that bad input can cause is one of these: the CLI prints its message (which says what
was wrong, where, and what to do) instead of a traceback. They subclass ValueError so that code
written against plain Python conventions still catches them.
"""


class ScratchGPTError(ValueError):
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

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno
