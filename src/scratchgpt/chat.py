"""A multi-turn chat with an instruction-tuned model, in its checkpoint's prompt style.

Each turn is formatted as one instruction example (the user's message is the instruction) and
earlier turns are kept before it, oldest dropped first, so the prompt plus the reply always fit
in the model's context window. Replies stream token by token and stop at <|endoftext|> or where
the model starts a new user turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, get_prompt_style
from scratchgpt.data.prompts import TURN_SEPARATOR, render_turn, render_turns, turn_stops
from scratchgpt.errors import ConfigError
from scratchgpt.generation import SamplingConfig, encode_prompt, stream_generate
from scratchgpt.generation.sampling import is_int

__all__ = ["TURN_SEPARATOR", "ChatSession"]


@dataclass
class ChatSession:
    """Chat state: the model, its prompt style, generation options and the history of turns."""

    model: nn.Module
    tokenizer: Any
    style: str = DEFAULT_STYLE
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    history: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Options are checked here, before the first message, not when the first reply starts.
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(
                f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        self.sampling  # noqa: B018 (builds the SamplingConfig, which checks the sampling options)
        self._style = get_prompt_style(self.style, self.tokenizer)
        ctx = getattr(getattr(self.model, "cfg", None), "context_length", None)
        self.context_length = int(ctx) if ctx else 1024
        # Keep room for at least a few prompt tokens however long the replies may be.
        self.max_new_tokens = max(1, min(self.max_new_tokens, self.context_length - 8))

    def _turn(self, user: str, reply: str | None) -> str:
        return render_turn(user, reply, self._style)

    def build_prompt(self, message: str) -> str:
        """The prompt for ``message``: as many recent turns as fit, then the new one."""
        return render_turns(
            self.history,
            message,
            self._style,
            budget=self.context_length - self.max_new_tokens,
            count_tokens=lambda text: len(encode_prompt(self.tokenizer, text)),
        )

    @property
    def sampling(self) -> SamplingConfig:
        """The session's sampling options."""
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.seed)

    def prompt_tokens(self, message: str) -> int:
        """Tokens in the prompt ``build_prompt(message)`` gives."""
        return len(encode_prompt(self.tokenizer, self.build_prompt(message)))

    def stream(self, message: str) -> Iterator[str]:
        """Yield the reply to ``message`` piece by piece; the turn joins the history at the end."""
        prompt = self.build_prompt(message)
        pieces: list[str] = []
        for piece in stream_generate(
            self.model,
            self.tokenizer,
            prompt,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            stop_strings=turn_stops(self._style),
        ):
            pieces.append(piece)
            yield piece
        self.history.append((message, "".join(pieces).strip()))

    def reply(self, message: str) -> str:
        """The whole reply to ``message`` (the history is updated)."""
        return "".join(self.stream(message)).strip()

    def reset(self) -> None:
        """Forget the history."""
        self.history.clear()
