"""Prompt rendering: the one place where instruction records, chat turns and OpenAI-style chat
messages become the text a model reads.

Everything goes through a prompt style (:mod:`scratchgpt.data.instructions`: ``alpaca``, the
book's template, or ``phi3``; or ``chat``, the model's own chat template, which renders whole
conversations itself: :mod:`scratchgpt.data.chat_style`). One instruction record is rendered as the model was trained on it
(:func:`render_prompt`). A conversation is a sequence of turns, each rendered as one instruction
record whose instruction is the user's message, followed by the reply; earlier turns come first,
each followed by :data:`TURN_SEPARATOR` (:func:`render_turns`, used by ``scratchgpt chat``), and
OpenAI-style ``(role, text)`` messages are first grouped into such turns (:func:`render_chat`,
used by the server). A base model has no prompt style: its messages are joined by a newline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from scratchgpt.data.chat_style import ChatPromptStyle
from scratchgpt.data.instructions import DEFAULT_STYLE, PromptStyle, get_prompt_style
from scratchgpt.errors import DataError

__all__ = [
    "BASE_CHAT_SEPARATOR",
    "TURN_SEPARATOR",
    "render_chat",
    "render_prompt",
    "render_turn",
    "render_turns",
    "turn_stops",
]

TURN_SEPARATOR = "\n\n"  # after each earlier turn of a conversation
BASE_CHAT_SEPARATOR = "\n"  # between the messages of a base model's chat (no prompt style)
SYSTEM_ROLES = ("system", "developer")

Style = str | PromptStyle | ChatPromptStyle


def render_prompt(entry: Mapping[str, str], style: Style = DEFAULT_STYLE) -> str:
    """What the model sees before its answer to one instruction record: the style's
    ``format_input`` plus the response marker."""
    return get_prompt_style(style).prompt(entry)


def render_turn(user: str, reply: str | None = None, style: Style = DEFAULT_STYLE) -> str:
    """One chat turn: the user's message as an instruction, then ``reply`` (None: the turn the
    model is about to answer)."""
    entry = {"instruction": user, "input": "", "output": reply or ""}
    return render_prompt(entry, style) + (reply if reply is not None else "")


def turn_stops(style: Style = DEFAULT_STYLE) -> list[str]:
    """Where a reply ends: the model starting the next user turn (a chat template's replies end
    at an end-of-turn token instead, one of the tokenizer's stop ids)."""
    start = get_prompt_style(style).turn_start
    return [start] if start else []


def render_turns(
    history: Sequence[tuple[str, str]],
    message: str,
    style: Style = DEFAULT_STYLE,
    *,
    system: str | None = None,
    budget: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> str:
    """The prompt for ``message`` after the earlier ``(user, reply)`` turns of ``history``,
    optionally preceded by a ``system`` text. With a token ``budget`` (and ``count_tokens``),
    only the most recent turns that fit are kept: the oldest are dropped first."""
    if budget is not None and count_tokens is None:
        raise TypeError("render_turns: a budget needs count_tokens")
    if isinstance(style, ChatPromptStyle):
        return _render_template_turns(history, message, style, system, budget, count_tokens)
    current = render_turn(message, None, style)
    parts = [current]
    used = count_tokens(current) if budget is not None and count_tokens is not None else 0
    for user, reply in reversed(history):
        text = render_turn(user, reply, style) + TURN_SEPARATOR
        if budget is not None and count_tokens is not None:
            n = count_tokens(text)
            if used + n > budget:
                break
            used += n
        parts.insert(0, text)
    if system is not None:
        parts.insert(0, system + TURN_SEPARATOR)
    return "".join(parts)


def _render_template_turns(
    history: Sequence[tuple[str, str]],
    message: str,
    style: ChatPromptStyle,
    system: str | None,
    budget: int | None,
    count_tokens: Callable[[str], int] | None,
) -> str:
    """render_turns for a chat template: the conversation as messages, the oldest turns dropped
    until the rendering fits the budget."""
    head = [{"role": "system", "content": system}] if system is not None else []
    turns = [list(pair) for pair in history]
    while True:
        messages = list(head)
        for user, reply in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        text = style.render_messages([*messages, {"role": "user", "content": message}])
        if not turns or budget is None or count_tokens is None or count_tokens(text) <= budget:
            return text
        turns.pop(0)


def render_chat(messages: Sequence[tuple[str, str]], style: Style | None) -> str:
    """The prompt for OpenAI-style ``(role, text)`` messages: system (or developer) messages
    first, consecutive user messages joined into one turn, each assistant message closing a
    turn; with no prompt style (a base model) the texts joined by a newline. The last message
    must be the user's: the model writes the assistant's reply."""
    if not messages:
        raise DataError("messages is empty: give at least one user message")
    if messages[-1][0] != "user":
        raise DataError(
            f"the last message is the {messages[-1][0]}'s; it must be the user's (the model "
            "writes the assistant's reply)"
        )
    if style is None:
        return BASE_CHAT_SEPARATOR.join(text for _, text in messages)
    if isinstance(style, ChatPromptStyle):
        # The template renders every role itself (a developer message is a system message).
        return style.render_messages(
            [{"role": "system" if r == "developer" else r, "content": t} for r, t in messages]
        )
    system = [text for role, text in messages if role in SYSTEM_ROLES]
    history: list[tuple[str, str]] = []
    user: list[str] = []
    for role, text in messages:
        if role == "user":
            user.append(text)
        elif role == "assistant":
            history.append(("\n".join(user), text))
            user = []
    return render_turns(
        history, "\n".join(user), style, system="\n".join(system) if system else None
    )
