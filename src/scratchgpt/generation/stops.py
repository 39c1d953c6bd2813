"""Stop strings: the one matcher that finds them in generated text.

Generation ends at the token that completes a stop string. The decoder watches each row's bytes
as tokens arrive (:meth:`StopMatcher.push`, so a stop string split across tokens, even inside a
multi-byte character, is seen at the token that completes it); the text helpers then cut the
text before the first stop string (:meth:`StopMatcher.cut`), and streaming holds back any tail
that could still become one (:meth:`StopMatcher.held_back`). The same class serves ``str`` and
``bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from scratchgpt.errors import ConfigError

__all__ = ["StopMatcher", "check_stop_strings"]

S = TypeVar("S", str, bytes)


def check_stop_strings(stop_strings: Any, tokenizer: Any) -> list[str]:
    """The stop strings as a list (one string counts as a list of one); each must be a
    non-empty string, and matching them needs a tokenizer to decode tokens."""
    if stop_strings is None:
        return []
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    stops = list(stop_strings)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"stop strings must be non-empty strings, got {s!r}")
    if stops and tokenizer is None:
        raise ConfigError("stop_strings need a tokenizer to decode the tokens: pass tokenizer=")
    return stops


class StopMatcher(Generic[S]):
    """Finds stop strings (all ``str`` or all ``bytes``) in text that arrives piece by piece."""

    def __init__(self, stops: Sequence[S]) -> None:
        self.stops: list[S] = list(stops)
        self.longest = max((len(s) for s in self.stops), default=0)
        self._tail: Any = None  # the last `longest` units seen by push()

    def __bool__(self) -> bool:
        return bool(self.stops)

    def push(self, piece: S) -> bool:
        """Add the next piece; whether a stop string ends inside it (one that ended earlier
        is not reported again)."""
        tail = piece[:0] + piece if self._tail is None else self._tail + piece
        # A new match must end inside the new piece: search only that far back.
        window = tail[-(len(piece) + self.longest - 1) :] if piece else piece[:0]
        found = any(s in window for s in self.stops)
        self._tail = tail[max(0, len(tail) - self.longest) :]
        return found

    def cut(self, text: S) -> tuple[S, bool]:
        """``text`` up to the first stop string, and whether there was one."""
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def held_back(self, text: S) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string:
        what a stream must not send yet."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
