"""The interface every scratchgpt tokenizer implements, and the special-token rules they share.

Special tokens follow tiktoken's rules for every tokenizer (the one documented exception is the
"simple" tokenizer, see :mod:`scratchgpt.tokenizers.simple`):

- ``allowed_special``: special-token strings that are encoded to their id (a set, or ``"all"``);
- ``disallowed_special``: special-token strings whose presence in the text is an error (a set, or
  ``"all"``, meaning every special token that is not allowed);
- a special token that is neither allowed nor disallowed (``disallowed_special=()``) is encoded
  as ordinary text, exactly as :meth:`Tokenizer.encode_ordinary` does.
"""

from __future__ import annotations

import functools
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Literal

from scratchgpt.errors import Advice, TokenizerError
from scratchgpt.fileio import PathLike, atomic_write_json

EOT = "<|endoftext|>"
FORMAT = "scratchgpt-tokenizer"

SpecialSet = AbstractSet[str] | Literal["all"]


@functools.lru_cache(maxsize=64)
def special_regex(tokens: frozenset[str]) -> re.Pattern[str]:
    """A regex matching any of `tokens`; longer tokens first, so a token wins over its prefix."""
    ordered = sorted(tokens, key=lambda t: (-len(t), t))
    return re.compile("|".join(re.escape(t) for t in ordered))


def _as_set(value: SpecialSet, name: str) -> AbstractSet[str]:
    if isinstance(value, str):
        # A bare string other than "all" is almost always a forgotten pair of braces.
        raise TokenizerError(
            f"{name}={value!r}: expected 'all' or a set of special-token strings, "
            f"e.g. {name}={{{value!r}}}"
        )
    return value


def resolve_special(
    special_tokens: Mapping[str, int],
    allowed_special: SpecialSet,
    disallowed_special: SpecialSet,
) -> tuple[frozenset[str], frozenset[str]]:
    """Turn the user's allowed/disallowed arguments into two concrete sets, checking names."""
    known = frozenset(special_tokens)
    if allowed_special == "all":
        allowed = known
    else:
        allowed = frozenset(_as_set(allowed_special, "allowed_special"))
        unknown = allowed - known
        if unknown:
            have = ", ".join(sorted(known)) or "none"
            raise TokenizerError(
                f"allowed_special names {sorted(unknown)}, which this tokenizer does not have "
                f"(its special tokens: {have}); remove it or use a tokenizer that defines it"
            )
    if disallowed_special == "all":
        disallowed = known - allowed
    else:
        disallowed = frozenset(_as_set(disallowed_special, "disallowed_special")) & known
    return allowed, disallowed


def disallowed_special_error(text: str, token: str, position: int) -> TokenizerError:
    """The error for a disallowed special token found in `text` at character `position`."""
    line = text.count("\n", 0, position) + 1
    return TokenizerError(
        f"the text contains the special token {token!r} at character {position} (line {line}), "
        "and special tokens are disallowed by default",
        Advice(
            f"To encode it as the special token pass allowed_special={{{token!r}}} or "
            "allowed_special='all'; to encode it as ordinary text pass disallowed_special=() or "
            "use encode_ordinary()",
            "Pass --allow-special to encode it as the special token",
            "--allow-special",
            sep=". ",
        ),
    )


def check_disallowed(text: str, disallowed: frozenset[str]) -> None:
    """Raise TokenizerError if `text` contains any of `disallowed`."""
    if disallowed:
        m = special_regex(disallowed).search(text)
        if m:
            raise disallowed_special_error(text, m.group(), m.start())


def split_special(text: str, allowed: frozenset[str]) -> Iterator[tuple[str, bool]]:
    """Yield (piece, is_special) for `text` cut at each allowed special token; pieces may be ''."""
    pos = 0
    for m in special_regex(allowed).finditer(text):
        yield text[pos : m.start()], False
        yield m.group(), True
        pos = m.end()
    yield text[pos:], False


def as_int_ids(ids: Iterable[Any]) -> list[int] | None:
    """`ids` as Python ints (numpy/torch integers convert), or None if one is not an integer."""
    try:
        return [operator.index(i) for i in ids]
    except TypeError:
        return None


def bad_id_error(ids: list[Any], vocab_size: int) -> TokenizerError:
    """The error for the first id in `ids` that is not an integer in [0, vocab_size)."""
    for i, t in enumerate(ids):
        try:
            ok = 0 <= operator.index(t) < vocab_size
        except TypeError:
            ok = False
        if not ok:
            return TokenizerError(
                f"token id {t!r} at position {i} is not in this tokenizer's vocabulary "
                f"(valid ids: 0..{vocab_size - 1}); were these ids made by another tokenizer?"
            )
    return TokenizerError("token ids could not be decoded")


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses implement encode_ordinary, decode and the vocabulary."""

    name: str = ""

    # --- encoding -------------------------------------------------------------------------
    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token strings in it as plain text."""

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode `text`; special tokens follow tiktoken's rules (see the module docstring)."""
        allowed, disallowed = resolve_special(
            self.special_tokens, allowed_special, disallowed_special
        )
        check_disallowed(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        specials = self.special_tokens
        ids: list[int] = []
        for piece, is_special in split_special(text, allowed):
            if is_special:
                ids.append(specials[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    # --- decoding -------------------------------------------------------------------------
    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Turn token ids back into text."""

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 bytes of the decoded text (byte-level tokenizers return raw token bytes)."""
        return self.decode(ids).encode("utf-8")

    # --- vocabulary -----------------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (ids are 0..vocab_size-1)."""

    @property
    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special-token string -> id."""

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>`` when this tokenizer has it, else None."""
        return self.special_tokens.get(EOT)

    @property
    def stop_ids(self) -> list[int]:
        """Every id that ends a generation: here ``[eot_id]`` (or ``[]``); tokenizers of chat
        models add their end-of-turn tokens."""
        eot = self.eot_id
        return [] if eot is None else [eot]

    @property
    def bos_ids(self) -> list[int]:
        """The ids this tokenizer's model expects before a text (e.g. Llama 3's BOS); none here."""
        return []

    @abstractmethod
    def token_to_id(self, token: str) -> int:
        """Id of one token (as :meth:`id_to_token` spells it); TokenizerError if unknown."""

    @abstractmethod
    def id_to_token(self, id: int) -> str:
        """The token with this id, spelled as the vocabulary stores it."""

    def token_piece(self, id: int) -> str:
        """The text this single token decodes to (used by ``--show-tokens``)."""
        return self.decode([id])

    # --- persistence ----------------------------------------------------------------------
    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, as JSON-able data (what save() writes)."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A small JSON-able description (name and key options) for checkpoints and logs."""

    def save(self, path: PathLike, *, overwrite: bool = True) -> Path:
        """Write one JSON file that fully describes this tokenizer (atomically); returns its path."""
        data = {"format": FORMAT, "type": self.name, "version": 1, **self.to_dict()}
        return atomic_write_json(path, data, overwrite=overwrite)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
