"""The request bodies of the HTTP API (OpenAI's fields, plus ``top_k`` and ``/v1/classify``).

Their class names are the schema names in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_N",
    "MAX_PROMPTS",
    "SEED_LIMIT",
    "ChatMessage",
    "ChatRequest",
    "ClassifyRequest",
    "CompletionRequest",
    "ErrorResponse",
    "SamplingRequest",
    "TextPart",
]

MAX_N = 8
MAX_PROMPTS = 16
MAX_STOPS = 4
MAX_CLASSIFY_TEXTS = 256
SEED_LIMIT = 2**63  # torch.Generator seeds are 64-bit


class _Body(BaseModel):
    # Unknown fields (logprobs, user, ...) are accepted and ignored, as clients send them freely.
    model_config = ConfigDict(extra="allow")


class SamplingRequest(_Body):
    """The fields completions and chat completions share: the model and how to sample."""

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

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``."""

    prompt: str | list[str] = Field(..., description="a prompt or a list of prompts")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class ChatRequest(SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    truncate_history: bool | None = Field(
        None,
        description=(
            "scratchgpt extension: when the conversation and max_tokens do not fit the "
            "context, drop the oldest turns (system messages and the last turn are kept); the "
            "response's truncated_messages says how many messages were dropped. Default: on, "
            "unless the server was started with --no-truncate-history"
        ),
    )


class ClassifyRequest(_Body):
    """``POST /v1/classify`` (classifier checkpoints)."""

    model: str | None = None
    input: str | list[str] = Field(..., description="a text or a list of texts")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error: OpenAI's error object (documented in ``/openapi.json``)."""

    error: ErrorDetail
