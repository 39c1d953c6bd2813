"""Serving: an OpenAI-compatible HTTP API and a browser chat page (needs the ``serve`` extra:
FastAPI and uvicorn). ``create_app`` is imported lazily so this package imports without them."""

from __future__ import annotations

import warnings
from typing import Any

from scratchgpt.data import prompts as _prompts
from scratchgpt.serving.engine import Engine, QueueFullError
from scratchgpt.serving.model import ServedModel, load_served_model

__all__ = [
    "Engine",
    "QueueFullError",
    "ServedModel",
    "create_app",
    "load_served_model",
]

_MOVED = {"render_chat": ("scratchgpt.data.prompts", _prompts)}


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`scratchgpt.serving.app.create_app`."""
    from scratchgpt.serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        home, module = _MOVED[name]
        warnings.warn(
            f"scratchgpt.serving.{name} moved to {home}.{name}; the old name will be removed "
            "in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)
    raise AttributeError(f"module 'scratchgpt.serving' has no attribute {name!r}")
