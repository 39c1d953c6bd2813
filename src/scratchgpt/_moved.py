"""Old import paths that keep working for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(
    old: str, names: Mapping[str, str], *, rest: str | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the deprecated module ``old``: ``names`` maps each old name
    to ``"new.module"`` or ``"new.module:new_name"``; with ``rest``, any other public name is
    looked up in that module."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None and rest is not None and not name.startswith("_"):
            target = rest
        if target is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module, _, new_name = target.partition(":")
        new_name = new_name or name
        value = getattr(importlib.import_module(module), new_name)
        warnings.warn(
            f"{old}.{name} is deprecated and will be removed in the next release; "
            f"use {module}.{new_name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__


def moved_constant(old: str, read: Callable[[], Any], hint: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for an old constant ``old`` ("module.NAME") whose values now
    live elsewhere (a preset file): reading it warns and returns ``read()``."""
    module, _, constant = old.rpartition(".")

    def __getattr__(name: str) -> Any:
        if name != constant:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{old} is deprecated; {hint}", DeprecationWarning, stacklevel=2)
        return read()

    return __getattr__
