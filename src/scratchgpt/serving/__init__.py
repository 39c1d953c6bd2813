"""Serving: an OpenAI-compatible HTTP API and a browser chat page (needs the ``serve`` extra:
FastAPI and uvicorn). ``create_app`` is imported lazily so this package imports without them."""

from __future__ import annotations

from typing import Any

from scratchgpt.serving.engine import Engine, QueueFullError
from scratchgpt.serving.model import ServedModel, load_served_model, render_chat

__all__ = [
    "Engine",
    "QueueFullError",
    "ServedModel",
    "create_app",
    "load_served_model",
    "render_chat",
]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`scratchgpt.serving.app.create_app`."""
    from scratchgpt.serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)
