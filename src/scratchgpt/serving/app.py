"""An OpenAI-compatible HTTP API over one model, and a browser chat page.

Endpoints: ``GET /`` (the chat page), ``GET /health``, ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (language models), ``POST /v1/classify``
(classifier checkpoints). Errors use OpenAI's shape: ``{"error": {"message", "type", "param",
"code"}}``. Generation runs on one worker thread (:mod:`scratchgpt.serving.engine`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from scratchgpt.errors import ScratchGPTError
from scratchgpt.serving.engine import (
    Engine,
    JobCancelledError,
    JobTimeoutError,
    QueueFullError,
)
from scratchgpt.serving.model import ServedModel, message_text, render_chat, run_generation

log = logging.getLogger("scratchgpt.serving")

DEFAULT_MAX_BODY = 1_000_000  # bytes: far more than any prompt that fits a GPT-2 context
DEFAULT_CHAT_MAX_TOKENS = 256
MAX_N = 8
MAX_PROMPTS = 16
SEED_LIMIT = 2**63  # torch.Generator seeds are 64-bit


# --------------------------------------------------------------------------------------------
# Errors in OpenAI's shape


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers


def error_body(message: str, type: str, param: str | None = None, code: Any = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=e.headers
    )


_STATUS_TYPES = {
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _UNION_TAGS)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = list(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    # Pydantic adds the member type of a union to the location ("prompt.str"): keep the field.
    param = ".".join(str(x) for x in loc if not _is_union_tag(x)) or None
    if first.get("type") == "json_invalid":
        return (
            f"the request body is not valid JSON ({first.get('msg')}); send a JSON object",
            None,
        )
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"field {param!r}: " if param else ""
    return f"{where}{first.get('msg', 'invalid value')}{more}", param


# --------------------------------------------------------------------------------------------
# Request bodies


class _Body(BaseModel):
    # Unknown fields (logprobs, user, ...) are accepted and ignored, as clients send them freely.
    model_config = ConfigDict(extra="allow")


class _Sampling(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="scratchgpt extension: top-k sampling")
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)
    stream_options: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str] = Field(..., description="a prompt or a list of prompts")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class ClassifyRequest(_Body):
    """``POST /v1/classify`` (classifier checkpoints)."""

    model: str | None = None
    input: str | list[str] = Field(..., description="a text or a list of texts")


# --------------------------------------------------------------------------------------------
# Body-size limit (a plain ASGI middleware: it must act before the body is parsed)


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        data = json.dumps(
            error_body(
                f"request body is larger than the server's limit of {self.limit} bytes; send a "
                "shorter prompt (or start the server with a larger --max-body-bytes)",
                "invalid_request_error",
                code="request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------------------------
# The app


def create_app(
    served: ServedModel,
    *,
    api_key: str | None = None,
    max_queue: int = 16,
    timeout: float = 60.0,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    engine: Engine | None = None,
) -> FastAPI:
    """The FastAPI app serving ``served``; requests to ``/v1/*`` need ``Authorization: Bearer
    api_key`` when a key is given. At most ``max_queue`` requests wait (503 beyond), each may
    take ``timeout`` seconds, bodies over ``max_body_bytes`` get 413."""
    eng = engine or Engine(max_queue=max_queue, timeout=timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng.start()
        yield
        eng.stop()

    app = FastAPI(
        title="scratchgpt",
        description="An OpenAI-compatible API over a scratchgpt model.",
        lifespan=lifespan,
    )
    app.state.engine = eng
    app.state.served = served
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        etype = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        return JSONResponse(error_body(message, etype), exc.status_code, headers=exc.headers)

    @app.exception_handler(ScratchGPTError)
    async def _bad_input(request: Request, exc: ScratchGPTError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(f"internal error: {exc}", "server_error"), 500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise APIError(
                401,
                "missing API key: send the header 'Authorization: Bearer KEY'",
                "authentication_error",
                code="missing_api_key",
            )
        if not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(401, "invalid API key", "authentication_error", code="invalid_api_key")

    auth = [Depends(check_key)]

    def check_model(name: str | None) -> None:
        if name is not None and name != served.name:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves {served.name!r} "
                "(GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def model_card() -> dict[str, Any]:
        return {
            "id": served.name,
            "object": "model",
            "created": served.created,
            "owned_by": "scratchgpt",
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        page = resources.files("scratchgpt.serving").joinpath("static/chat.html").read_text()
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the queue's state."""
        return {
            "status": "ok",
            "model": served.name,
            "kind": served.kind,
            "queued": eng.queued,
            "running": eng.running,
            "max_queue": eng.max_queue,
            **eng.stats,
        }

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict[str, Any]:
        """The one model this server serves."""
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=auth)
    async def get_model(model_id: str) -> dict[str, Any]:
        """One model by id."""
        check_model(model_id)
        return model_card()

    def submit(fn: Any) -> Any:
        try:
            return eng.submit(fn)
        except QueueFullError as e:
            wait = eng.retry_after()
            raise APIError(
                503,
                f"the server is busy ({e}); retry in {wait} s",
                "server_error",
                code="queue_full",
                headers={"Retry-After": str(wait)},
            ) from None

    def timeout_error() -> APIError:
        return APIError(
            504,
            f"the request took longer than the server's limit of {eng.timeout:g} s; ask for "
            "fewer tokens (max_tokens)",
            "timeout",
            code="timeout",
        )

    async def collect(job: Any, request: Request) -> Any:
        """The job's result; cancels it if the client disconnects first."""
        import asyncio

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(0.1)
            job.cancel()

        watcher = asyncio.create_task(watch())
        try:
            async for kind, value in job.events():
                if kind == "done":
                    return value
                if kind == "error":
                    if isinstance(value, JobTimeoutError):
                        raise timeout_error()
                    if isinstance(value, JobCancelledError):
                        raise APIError(499, "request cancelled", code="cancelled")
                    raise value
        except JobTimeoutError:
            raise timeout_error() from None
        finally:
            watcher.cancel()
        raise APIError(500, "the generation ended without a result", "server_error")

    if served.kind == "classifier":

        @app.post("/v1/classify", dependencies=auth)
        async def classify_texts(body: ClassifyRequest, request: Request) -> Any:
            """Label each input text with the classifier."""
            from scratchgpt.tasks.classify import classify

            check_model(body.model)
            texts = [body.input] if isinstance(body.input, str) else body.input
            if not texts or len(texts) > 256:
                raise APIError(400, "input must hold 1 to 256 texts", param="input")
            n_tokens = sum(len(served.tokenizer.encode(t)) for t in texts)
            job = submit(lambda emit, stop: classify(served.classifier, texts))
            preds = await collect(job, request)
            return {
                "object": "list",
                "model": served.name,
                "data": [
                    {
                        "index": i,
                        "label": p.label,
                        "label_id": p.label_id,
                        "probability": p.probability,
                        "probabilities": p.probabilities,
                    }
                    for i, p in enumerate(preds)
                ],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            }

        return app

    def encode(text: str) -> list[int]:
        from scratchgpt.generation import encode_prompt

        ids = encode_prompt(served.tokenizer, text)
        if not ids:
            raise APIError(400, "the prompt is empty: give at least one character", param="prompt")
        return ids

    def budget(prompts: list[list[int]], asked: int | None, default: int, param: str) -> int:
        ctx = served.context_length
        longest = max(len(p) for p in prompts)
        room = ctx - longest
        if room < 1:
            raise APIError(
                400,
                f"this model's maximum context length is {ctx} tokens and the prompt has "
                f"{longest}; shorten the prompt",
                param=param,
                code="context_length_exceeded",
            )
        if asked is None:
            return min(default, room)
        if asked > room:
            raise APIError(
                400,
                f"this model's maximum context length is {ctx} tokens; the prompt has {longest} "
                f"and max_tokens asks for {asked} more: lower max_tokens to at most {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return asked

    def stops_of(body: _Sampling, extra: list[str]) -> list[str]:
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4:
            raise APIError(400, "stop takes at most 4 strings", param="stop")
        if any(not s for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return stop + extra

    def start(body: _Sampling, prompts: list[list[int]], max_tokens: int, stop: list[str]) -> Any:
        opts = {
            "n": body.n,
            "max_tokens": max_tokens,
            "temperature": body.temperature,
            "top_p": None if body.top_p >= 1.0 else body.top_p,
            "top_k": body.top_k,
            "stop": stop,
            "seed": body.seed,
        }
        return submit(
            lambda emit, should_stop: run_generation(
                served, prompts, emit=emit, should_stop=should_stop, **opts
            )
        )

    def usage(prompts: list[list[int]], n: int, completion: int) -> dict[str, int]:
        prompt_tokens = sum(len(p) for p in prompts) * n
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    async def sse(
        job: Any, chunk: Any, final: Any, usage_chunk: Any, n_choices: int
    ) -> AsyncIterator[str]:
        """Server-sent events of a streaming job; a disconnect cancels the job."""
        try:
            for i in range(n_choices):
                first = chunk(i, None, None)
                if first is not None:
                    yield f"data: {json.dumps(first)}\n\n"
            async for kind, value in job.events():
                if kind == "item":
                    index, piece = value
                    if piece is not None:
                        yield f"data: {json.dumps(chunk(index, piece, None))}\n\n"
                elif kind == "done":
                    for c in value:
                        yield f"data: {json.dumps(final(c))}\n\n"
                    if usage_chunk is not None:
                        total = sum(c.completion_tokens for c in value)
                        yield f"data: {json.dumps(usage_chunk(total))}\n\n"
                else:
                    err = value
                    if isinstance(err, JobTimeoutError):
                        e = timeout_error()
                        body = error_body(e.message, e.type, code=e.code)
                    elif isinstance(err, ScratchGPTError):
                        body = error_body(str(err), "invalid_request_error")
                    else:
                        body = error_body(f"generation failed: {err}", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
        except JobTimeoutError:
            e = timeout_error()
            yield f"data: {json.dumps(error_body(e.message, e.type, code=e.code))}\n\n"
        finally:
            job.cancel()  # a no-op once finished; stops the worker if the client left
        yield "data: [DONE]\n\n"

    def streaming(gen: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(
            gen,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def include_usage(body: _Sampling) -> bool:
        return bool((body.stream_options or {}).get("include_usage"))

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Continue a prompt (or each of a list of prompts)."""
        check_model(body.model)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts or len(texts) > MAX_PROMPTS:
            raise APIError(400, f"prompt must hold 1 to {MAX_PROMPTS} strings", param="prompt")
        prompts = [encode(t) for t in texts]
        max_tokens = budget(prompts, body.max_tokens, 16, "prompt")
        stop = stops_of(body, [])
        job = start(body, prompts, max_tokens, stop)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": served.name}

        def choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

        if body.stream:
            n_choices = len(prompts) * body.n
            return streaming(
                sse(
                    job,
                    lambda i, piece, f: None if piece is None else {
                        **head, "choices": [choice(i, piece, f)]
                    },
                    lambda c: {**head, "choices": [choice(c.index, "", c.finish_reason)]},
                    (lambda t: {**head, "choices": [], "usage": usage(prompts, body.n, t)})
                    if include_usage(body)
                    else None,
                    n_choices,
                )
            )  # fmt: skip
        result = await collect(job, request)
        return {
            **head,
            "choices": [choice(c.index, c.text, c.finish_reason) for c in result],
            "usage": usage(prompts, body.n, sum(c.completion_tokens for c in result)),
        }

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        """Answer a conversation, rendered in the checkpoint's prompt style."""
        check_model(body.model)
        messages = [(m.role, message_text(m.content)) for m in body.messages]
        prompt = render_chat(messages, served.style)
        prompts = [encode(prompt)]
        asked = body.max_completion_tokens or body.max_tokens
        max_tokens = budget(prompts, asked, DEFAULT_CHAT_MAX_TOKENS, "messages")
        extra = []
        if served.style is not None:
            from scratchgpt.data.instructions import get_prompt_style

            extra = [get_prompt_style(served.style).turn_start]  # the model starts a new turn
        stop = stops_of(body, extra)
        job = start(body, prompts, max_tokens, stop)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {
            "id": rid,
            "object": "chat.completion.chunk" if body.stream else "chat.completion",
            "created": created,
            "model": served.name,
        }

        if body.stream:

            def delta(i: int, piece: str | None, finish: str | None) -> dict[str, Any]:
                d = {"role": "assistant", "content": ""} if piece is None else {"content": piece}
                return {
                    **head,
                    "choices": [
                        {"index": i, "delta": d, "logprobs": None, "finish_reason": finish}
                    ],
                }

            def final(c: Any) -> dict[str, Any]:
                return {
                    **head,
                    "choices": [
                        {
                            "index": c.index,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": c.finish_reason,
                        }
                    ],
                }

            usage_chunk = (
                (lambda t: {**head, "choices": [], "usage": usage(prompts, body.n, t)})
                if include_usage(body)
                else None
            )
            return streaming(sse(job, delta, final, usage_chunk, body.n))
        result = await collect(job, request)
        return {
            **head,
            "choices": [
                {
                    "index": c.index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in result
            ],
            "usage": usage(prompts, body.n, sum(c.completion_tokens for c in result)),
        }

    return app
