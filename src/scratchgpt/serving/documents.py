"""The response bodies as ``/openapi.json`` documents them (the routes build plain dicts, in
:mod:`~scratchgpt.serving.responses`; these models only describe them, so that clients and the
schema fuzzer know what to expect). Extra fields are allowed, as in OpenAI's API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from scratchgpt.serving.schemas import ErrorResponse

__all__ = [
    "ChatResponse",
    "ClassifyResponse",
    "CompletionResponse",
    "ErrorResponse",
    "Health",
    "ModelCard",
    "ModelList",
]

FinishReason = Literal["stop", "length"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading"]
    ready: bool
    model: str
    kind: Literal["completion", "classifier"]
    api_key_required: bool
    queued: int
    running: bool
    max_queue: int
    slots: int
    active_slots: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason


class CompletionResponse(BaseModel):
    """``POST /v1/completions`` without ``stream``."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: FinishReason


class ChatResponse(BaseModel):
    """``POST /v1/chat/completions`` without ``stream``; ``truncated_messages``: how many of
    the oldest messages were left out to fit the context."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    truncated_messages: int


class Classification(BaseModel):
    index: int
    label: str
    label_id: int
    probability: float
    probabilities: dict[str, float]


class ClassifyUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ClassifyResponse(BaseModel):
    """``POST /v1/classify``."""

    object: Literal["list"]
    model: str
    data: list[Classification]
    usage: ClassifyUsage


def documented(
    model: type[BaseModel], description: str, *, stream: bool = False
) -> dict[int | str, dict[str, Any]]:
    """A route's 200 response as documented: ``model``'s schema, not checked at run time; with
    ``stream``, also the server-sent events a request with ``stream: true`` gets."""
    response: dict[str, Any] = {"model": model, "description": description}
    if stream:
        response["description"] += (
            "; with stream: true, server-sent events, each a JSON chunk (or an error object) in "
            "data, the last data: [DONE]"
        )
        response["content"] = {
            "text/event-stream": {
                "schema": {"type": "object", "properties": {"data": {"type": "string"}}}
            }
        }
    return {200: response}
