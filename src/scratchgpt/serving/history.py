"""Fitting a chat into the context window: when the prompt of a conversation plus the room kept
for the reply is longer than the model's context, the oldest turns are dropped, as
``scratchgpt chat`` does. System (and developer) messages and the last turn are always kept; a
turn is a run of user messages with the assistant replies that follow them, dropped whole."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scratchgpt.data.prompts import SYSTEM_ROLES
from scratchgpt.serving.model import ServedModel, chat_prompt

__all__ = ["FittedChat", "fit_chat", "turn_starts"]


@dataclass
class FittedChat:
    """The prompt's token ids, where the reply stops, and how many messages were left out."""

    ids: list[int]
    stop: list[str]
    dropped: int


def turn_starts(messages: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of the messages that begin a turn: the first message that is not a system
    message, and each user message that follows an assistant message."""
    starts: list[int] = []
    previous = None
    for i, (role, _) in enumerate(messages):
        if role in SYSTEM_ROLES:
            continue
        if not starts or (role == "user" and previous == "assistant"):
            starts.append(i)
        previous = role
    return starts


def _without_turns(messages: Sequence[tuple[str, str]], start: int) -> list[tuple[str, str]]:
    return [m for i, m in enumerate(messages) if i >= start or m[0] in SYSTEM_ROLES]


def fit_chat(
    served: ServedModel,
    messages: Sequence[tuple[str, str]],
    *,
    reserve: int,
    truncate: bool,
    encode: Callable[[str], list[int]],
) -> FittedChat:
    """The prompt of ``messages`` with the fewest oldest turns dropped (none unless ``truncate``)
    so that its tokens plus ``reserve`` fit the context; when even the last turn alone does not
    fit, everything but it is dropped and the caller's length check answers."""
    prompt, stop = chat_prompt(served, messages)  # raises on a conversation it cannot render
    ids = encode(prompt)
    ctx = served.context_length
    starts = turn_starts(messages)
    if not truncate or len(ids) + reserve <= ctx or len(starts) < 2:
        return FittedChat(ids, stop, 0)

    encoded: dict[int, list[int]] = {}

    def fits(k: int) -> bool:
        if k not in encoded:
            encoded[k] = encode(chat_prompt(served, _without_turns(messages, starts[k]))[0])
        return len(encoded[k]) + reserve <= ctx

    # Fewer turns never make a longer prompt: binary search the fewest turns to drop (1 .. all
    # but the last), encoding about log2(turns) prompts rather than one per turn.
    low, high = 1, len(starts) - 1
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    fits(low)
    dropped = sum(1 for m in messages[: starts[low]] if m[0] not in SYSTEM_ROLES)
    return FittedChat(encoded[low], stop, dropped)
