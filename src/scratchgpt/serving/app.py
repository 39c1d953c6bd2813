"""An OpenAI-compatible HTTP API over one model, and a browser chat page.

Endpoints: ``GET /`` (the chat page), ``GET /health``, ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (language models), ``POST /v1/classify``
(classifier checkpoints), ``GET /metrics`` (Prometheus). Errors use OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``. Generation runs on one worker thread with
continuous batching (:mod:`scratchgpt.serving.engine`).

The parts: request bodies in :mod:`~scratchgpt.serving.schemas`, errors in
:mod:`~scratchgpt.serving.errors`, the routes in :mod:`~scratchgpt.serving.routes` (each callable
alone), the job glue in :mod:`~scratchgpt.serving.jobs`, response bodies in
:mod:`~scratchgpt.serving.responses`; ``create_app`` only wires them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from scratchgpt.serving import routes
from scratchgpt.serving.engine import Engine
from scratchgpt.serving.errors import APIError, error_body, install_error_handlers
from scratchgpt.serving.middleware import DEFAULT_MAX_BODY, BodyLimitMiddleware
from scratchgpt.serving.model import ServedModel

__all__ = ["DEFAULT_MAX_BODY", "APIError", "create_app", "error_body"]


def create_app(
    served: ServedModel,
    *,
    api_key: str | None = None,
    max_queue: int = 16,
    timeout: float = 60.0,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    engine: Engine | None = None,
    truncate_history: bool = True,
    slots: int = 8,
    shutdown_grace: float = 30.0,
) -> FastAPI:
    """The FastAPI app serving ``served``; requests to ``/v1/*`` need ``Authorization: Bearer
    api_key`` when a key is given. At most ``max_queue`` requests wait (503 beyond), each may
    take ``timeout`` seconds, bodies over ``max_body_bytes`` get 413. ``truncate_history``: chat
    requests drop their oldest turns to fit the context unless they say otherwise. ``slots``
    choices are decoded at once (continuous batching); at shutdown, requests still running
    after ``shutdown_grace`` seconds are cancelled."""
    eng = engine or Engine(max_queue=max_queue, timeout=timeout, slots=slots)
    if served.kind == "completion":
        eng.load(served.model, served.tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng.start()  # warms the model up on the worker; /health says ready once done
        yield
        eng.stop(shutdown_grace)

    app = FastAPI(
        title="scratchgpt",
        description="An OpenAI-compatible API over a scratchgpt model.",
        lifespan=lifespan,
    )
    app.state.engine = eng
    app.state.served = served
    app.state.api_key = api_key
    app.state.truncate_history = truncate_history
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    install_error_handlers(app)
    app.include_router(routes.common)
    if served.kind == "classifier":
        app.include_router(routes.classification)
    else:
        app.include_router(routes.generation)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its 422 responses: an invalid body gets 400 here, in OpenAI's
    shape (documented on each route)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
