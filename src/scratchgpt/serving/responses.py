"""The response bodies of completions and chat completions, whole or as stream chunks, in
OpenAI's shape."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scratchgpt.serving.model import Choice

__all__ = ["ChatFormat", "CompletionFormat", "response_head", "usage"]


def response_head(prefix: str, object: str, model: str) -> dict[str, Any]:
    """The fields every response and chunk starts with: a fresh id, the object, time, model."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": object,
        "created": int(time.time()),
        "model": model,
    }


def usage(prompts: Sequence[Sequence[int]], n: int, completion: int) -> dict[str, int]:
    """Token counts: each prompt counted once per choice generated from it."""
    prompt_tokens = sum(len(p) for p in prompts) * n
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


@dataclass
class _Format:
    head: dict[str, Any]
    prompts: Sequence[Sequence[int]]
    n: int
    include_usage: bool = False

    def usage_chunk(self, completion_tokens: int) -> dict[str, Any] | None:
        if not self.include_usage:
            return None
        return {**self.head, "choices": [], "usage": usage(self.prompts, self.n, completion_tokens)}

    def _whole(self, result: Sequence[Choice], choices: list[dict[str, Any]]) -> dict[str, Any]:
        total = sum(c.completion_tokens for c in result)
        return {**self.head, "choices": choices, "usage": usage(self.prompts, self.n, total)}


class CompletionFormat(_Format):
    """``text_completion`` objects: whole, or streamed with the same object name."""

    @staticmethod
    def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def piece(self, index: int, text: str) -> dict[str, Any]:
        return {**self.head, "choices": [self._choice(index, text, None)]}

    def final(self, choice: Choice) -> dict[str, Any]:
        return {**self.head, "choices": [self._choice(choice.index, "", choice.finish_reason)]}

    def response(self, result: Sequence[Choice]) -> dict[str, Any]:
        """The whole (non-streaming) response."""
        choices = [self._choice(c.index, c.text, c.finish_reason) for c in result]
        return self._whole(result, choices)


@dataclass
class ChatFormat(_Format):
    """``chat.completion`` objects, or ``chat.completion.chunk`` deltas when streamed (the first
    delta of each choice gives the assistant role). Both carry ``truncated_messages``: how many
    of the oldest messages were left out to fit the context (in the first chunk of a stream)."""

    truncated_messages: int = 0

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self.head, "choices": [choice]}

    def opening(self, index: int) -> dict[str, Any] | None:
        chunk = self._delta(index, {"role": "assistant", "content": ""}, None)
        return {**chunk, "truncated_messages": self.truncated_messages}

    def piece(self, index: int, text: str) -> dict[str, Any]:
        return self._delta(index, {"content": text}, None)

    def final(self, choice: Choice) -> dict[str, Any]:
        return self._delta(choice.index, {}, choice.finish_reason)

    def response(self, result: Sequence[Choice]) -> dict[str, Any]:
        """The whole (non-streaming) response."""
        choices = [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for c in result
        ]
        return {**self._whole(result, choices), "truncated_messages": self.truncated_messages}
