"""The API's routes, each a plain async function of its request body and its dependencies.

The served model, the engine and the API key live on ``app.state`` and reach a route through
FastAPI dependencies (:func:`get_served`, :func:`get_engine`, :func:`check_key`), so a route can
be called alone: ``await health(served=..., engine=...)``. Three routers group them: ``common``
(the page, health, models), ``generation`` (language models) and ``classification``
(classifiers); :func:`scratchgpt.serving.app.create_app` includes the ones the model needs.
"""

from __future__ import annotations

import dataclasses
import hmac
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scratchgpt.generation import SamplingConfig, encode_prompt, stop_ids
from scratchgpt.generation.slots import SlotRequest
from scratchgpt.serving.documents import (
    ChatResponse,
    ClassifyResponse,
    CompletionResponse,
    Health,
    ModelCard,
    ModelList,
    documented,
)
from scratchgpt.serving.engine import Engine, Job, QueueFullError
from scratchgpt.serving.errors import APIError, queue_full_error
from scratchgpt.serving.history import fit_chat, turn_starts
from scratchgpt.serving.jobs import collect, event_stream, submit
from scratchgpt.serving.metrics import CONTENT_TYPE
from scratchgpt.serving.model import (
    ServedModel,
    classify_texts,
    message_text,
)
from scratchgpt.serving.responses import ChatFormat, CompletionFormat, response_head
from scratchgpt.serving.schemas import (
    MAX_CLASSIFY_TEXTS,
    MAX_PROMPTS,
    MAX_STOPS,
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    ErrorResponse,
    SamplingRequest,
)

__all__ = ["classification", "common", "generation"]

DEFAULT_CHAT_MAX_TOKENS = 256
DEFAULT_COMPLETION_MAX_TOKENS = 16

# --------------------------------------------------------------------------------------------
# Dependencies


def get_served(request: Request) -> ServedModel:
    """The model this app serves."""
    return request.app.state.served


def get_engine(request: Request) -> Engine:
    """The app's generation engine."""
    return request.app.state.engine


# Declares the key in /openapi.json (components.securitySchemes and each route's security);
# the check itself is check_key's, as the scheme alone cannot tell whether a key was configured.
bearer = HTTPBearer(
    auto_error=False,
    description=(
        "The API key, sent as 'Authorization: Bearer KEY'. Needed only when the server was "
        "started with one (scratchgpt serve --api-key-env VAR); otherwise any or no key works."
    ),
)


def get_truncate_history(request: Request) -> bool:
    """Whether chat requests drop their oldest turns to fit unless they say otherwise."""
    return getattr(request.app.state, "truncate_history", True)


def check_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
) -> None:
    """With an API key set, require ``Authorization: Bearer KEY`` (401 otherwise)."""
    api_key = request.app.state.api_key
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


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, for /openapi.json: ``s401="..."`` and so on."""
    return {
        int(code[1:]): {"model": ErrorResponse, "description": text}
        for code, text in described.items()
    }


KEY_ERRORS = _errors(s401="a key is configured and the request has none or a wrong one")
BODY_ERRORS = _errors(
    s400="malformed JSON, an invalid field, or a prompt beyond the context window",
    s401="a key is configured and the request has none or a wrong one",
    s404="an unknown model",
    s413="the body is larger than the server's limit",
    s503="the queue is full (with a Retry-After header)",
    s504="the request ran past the server's time limit",
)

Served = Annotated[ServedModel, Depends(get_served)]
EngineDep = Annotated[Engine, Depends(get_engine)]
TruncateDefault = Annotated[bool, Depends(get_truncate_history)]
AUTH = [Depends(check_key)]

common = APIRouter()
generation = APIRouter(dependencies=AUTH, responses=BODY_ERRORS)
classification = APIRouter(dependencies=AUTH, responses=BODY_ERRORS)


def check_model(name: str | None, served: ServedModel) -> None:
    """404 unless ``name`` is None or the served model's name."""
    if name is not None and name != served.name:
        raise APIError(
            404,
            f"the model {name!r} does not exist; this server serves {served.name!r} "
            "(GET /v1/models)",
            param="model",
            code="model_not_found",
        )


def model_card(served: ServedModel) -> dict[str, Any]:
    """The model as ``/v1/models`` lists it."""
    return {
        "id": served.name,
        "object": "model",
        "created": served.created,
        "owned_by": "scratchgpt",
    }


# --------------------------------------------------------------------------------------------
# The page, health, models


@common.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    page = resources.files("scratchgpt.serving").joinpath("static/chat.html").read_text()
    return HTMLResponse(page)


def get_key_required(request: Request) -> bool:
    """Whether the server was started with an API key."""
    return request.app.state.api_key is not None


@common.get(
    "/health",
    response_model=None,
    responses={
        **documented(Health, "the server's state: ready"),
        503: {"model": Health, "description": "the model is still warming up"},
    },
)
async def health(
    served: Served,
    engine: EngineDep,
    key_required: Annotated[bool, Depends(get_key_required)] = False,
) -> dict[str, Any] | JSONResponse:
    """Liveness and readiness (503 with status "loading" until the model is warmed up), the
    queue's and slots' state, and whether ``/v1/*`` needs an API key (the chat page asks for
    one before its first request)."""
    ready = engine.ready
    state = {
        "status": "ok" if ready else "loading",
        "ready": ready,
        "model": served.name,
        "kind": served.kind,
        "api_key_required": key_required,
        "queued": engine.queued,
        "running": engine.running,
        "max_queue": engine.max_queue,
        "slots": engine.slots,
        "active_slots": engine.active_slots,
        **engine.stats,
    }
    return state if ready else JSONResponse(state, status_code=503)


@common.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def metrics(engine: EngineDep) -> Response:
    """The engine's metrics in the Prometheus text format (see scratchgpt.serving.metrics)."""
    return Response(engine.metrics.render(), media_type=CONTENT_TYPE)


@common.get(
    "/v1/models",
    dependencies=AUTH,
    response_model=None,
    responses={**documented(ModelList, "the one model served"), **KEY_ERRORS},
)
async def list_models(served: Served) -> dict[str, Any]:
    """The one model this server serves."""
    return {"object": "list", "data": [model_card(served)]}


@common.get(
    "/v1/models/{model_id:path}",
    dependencies=AUTH,
    response_model=None,
    responses={
        **documented(ModelCard, "the model"),
        **KEY_ERRORS,
        **_errors(s404="an unknown model"),
    },
)
async def get_model(model_id: str, served: Served) -> dict[str, Any]:
    """One model by id."""
    check_model(model_id, served)
    return model_card(served)


# --------------------------------------------------------------------------------------------
# Checking a generation request


def encode(served: ServedModel, text: str) -> list[int]:
    """Token ids of a prompt; 400 when it is empty."""
    ids = encode_prompt(served.tokenizer, text)
    if not ids:
        raise APIError(400, "the prompt is empty: give at least one character", param="prompt")
    return ids


def token_budget(
    served: ServedModel,
    prompts: list[list[int]],
    asked: int | None,
    default: int,
    param: str,
    hint: str = "",
) -> int:
    """Tokens to generate: ``asked``, or ``default`` cut to what fits; 400 when the longest
    prompt leaves no room in the context window or ``asked`` does not fit."""
    ctx = served.context_length
    longest = max(len(p) for p in prompts)
    room = ctx - longest
    if room < 1:
        raise APIError(
            400,
            f"this model's maximum context length is {ctx} tokens and the prompt has "
            f"{longest}; shorten the prompt{hint}",
            param=param,
            code="context_length_exceeded",
        )
    if asked is None:
        return min(default, room)
    if asked > room:
        raise APIError(
            400,
            f"this model's maximum context length is {ctx} tokens; the prompt has {longest} "
            f"and max_tokens asks for {asked} more: lower max_tokens to at most {room}{hint}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return asked


def stop_strings(body: SamplingRequest, extra: list[str]) -> list[str]:
    """The request's stop strings (at most four, none empty), then ``extra``."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOPS:
        raise APIError(400, f"stop takes at most {MAX_STOPS} strings", param="stop")
    if any(not s for s in stop):
        raise APIError(400, "stop strings must not be empty", param="stop")
    return stop + extra


def sampling_of(body: SamplingRequest) -> SamplingConfig:
    """The request's sampling options (``top_p`` 1 means no nucleus filter)."""
    top_p = None if body.top_p >= 1.0 else body.top_p
    return SamplingConfig(body.temperature, body.top_k, top_p, body.seed)


def start_generation(
    served: ServedModel,
    engine: Engine,
    body: SamplingRequest,
    prompts: list[list[int]],
    max_tokens: int,
    stop: list[str],
    request_id: str = "",
) -> Job:
    """Queue the generation of a request: ``n`` choices of each prompt (choice ``i * n + j``;
    a seeded request's choice ``j`` uses ``seed + j``), each decoded in its own slot."""
    sampling = sampling_of(body)
    eos = tuple(stop_ids(served.tokenizer))
    sequences = [
        SlotRequest(
            ids,
            max_tokens,
            dataclasses.replace(
                sampling, seed=None if sampling.seed is None else sampling.seed + j
            ),
            eos,
            tuple(stop),
        )
        for ids in prompts
        for j in range(body.n)
    ]
    try:
        return engine.submit_generation(
            served.model, served.tokenizer, sequences, request_id=request_id
        )
    except QueueFullError as e:
        raise queue_full_error(e, engine.retry_after()) from None


# --------------------------------------------------------------------------------------------
# Completions, chat completions, classification


@generation.post(
    "/v1/completions",
    response_model=None,
    responses=documented(CompletionResponse, "the completion", stream=True),
)
async def completions(
    body: CompletionRequest, request: Request, served: Served, engine: EngineDep
) -> Any:
    """Continue a prompt (or each of a list of prompts)."""
    check_model(body.model, served)
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not texts or len(texts) > MAX_PROMPTS:
        raise APIError(400, f"prompt must hold 1 to {MAX_PROMPTS} strings", param="prompt")
    prompts = [encode(served, t) for t in texts]
    max_tokens = token_budget(
        served, prompts, body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, "prompt"
    )
    head = response_head("cmpl", "text_completion", served.name)
    stop = stop_strings(body, [])
    job = start_generation(served, engine, body, prompts, max_tokens, stop, head["id"])
    fmt = CompletionFormat(head, prompts, body.n, body.include_usage)
    if body.stream:
        return event_stream(job, fmt, len(prompts) * body.n, engine.timeout)
    return fmt.response(await collect(job, request, engine.timeout))


@generation.post(
    "/v1/chat/completions",
    response_model=None,
    responses=documented(ChatResponse, "the reply", stream=True),
)
async def chat_completions(
    body: ChatRequest,
    request: Request,
    served: Served,
    engine: EngineDep,
    truncate_default: TruncateDefault = True,
) -> Any:
    """Answer a conversation, rendered in the checkpoint's prompt style; the oldest turns are
    dropped when it does not fit with the reply (``truncate_history``)."""
    check_model(body.model, served)
    messages = [(m.role, message_text(m.content)) for m in body.messages]
    asked = body.max_completion_tokens or body.max_tokens
    truncate = truncate_default if body.truncate_history is None else body.truncate_history
    # The room kept for the reply: max_tokens, or the default reply length (at most half the
    # context, so that a small model keeps some history).
    reserve = asked or min(DEFAULT_CHAT_MAX_TOKENS, served.context_length // 2)
    chat = fit_chat(
        served, messages, reserve=reserve, truncate=truncate, encode=lambda t: encode(served, t)
    )
    prompts = [chat.ids]
    could_drop = not truncate and len(turn_starts(messages)) > 1
    hint = ", or send truncate_history: true to drop the oldest turns" if could_drop else ""
    max_tokens = token_budget(served, prompts, asked, DEFAULT_CHAT_MAX_TOKENS, "messages", hint)
    stop = stop_strings(body, chat.stop)
    kind = "chat.completion.chunk" if body.stream else "chat.completion"
    head = response_head("chatcmpl", kind, served.name)
    job = start_generation(served, engine, body, prompts, max_tokens, stop, head["id"])
    fmt = ChatFormat(head, prompts, body.n, body.include_usage, chat.dropped)
    if body.stream:
        return event_stream(job, fmt, body.n, engine.timeout)
    return fmt.response(await collect(job, request, engine.timeout))


@classification.post(
    "/v1/classify",
    response_model=None,
    responses=documented(ClassifyResponse, "a label for each text"),
)
async def classify(
    body: ClassifyRequest, request: Request, served: Served, engine: EngineDep
) -> Any:
    """Label each input text with the classifier."""
    check_model(body.model, served)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_CLASSIFY_TEXTS:
        raise APIError(400, f"input must hold 1 to {MAX_CLASSIFY_TEXTS} texts", param="input")
    n_tokens = sum(len(served.tokenizer.encode(t)) for t in texts)
    job = submit(engine, lambda emit, stop: classify_texts(served, texts))
    preds = await collect(job, request, engine.timeout)
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
