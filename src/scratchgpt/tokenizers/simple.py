"""Word- and character-level tokenizers with vocabularies taken from a corpus (book chapter 2.2-2.4).

Neither is byte-level: text outside the vocabulary is mapped to ``<|unk|>`` (or rejected), so they
are for learning and tiny experiments; real models use "gpt2" or a trained "bpe".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scratchgpt.errors import Advice, TokenizerError
from scratchgpt.tokenizers.base import EOT, SpecialSet, Tokenizer, as_int_ids, bad_id_error

UNK = "<|unk|>"

# Book listing 2.4 (SimpleTokenizerV2): split on punctuation, double dashes and whitespace,
# keeping the punctuation as tokens; decoding removes the space that joining puts before it.
_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.:;?!"()\'])')


def simple_words(text: str) -> list[str]:
    """The book's V2 pre-tokenization: split, strip, drop empty items."""
    return [s for s in (item.strip() for item in _SPLIT.split(text)) if s]


class SimpleTokenizer(Tokenizer):
    """The book's regex word tokenizer, V2 (listing 2.4): unknown words become ``<|unk|>``.

    Not lossless: whitespace is normalised and words outside the vocabulary are lost.

    Special tokens: as in the book, ``<|endoftext|>`` and ``<|unk|>`` written in the text encode to
    their ids by default, i.e. ``allowed_special`` defaults to ``"all"`` here (every other
    tokenizer defaults to rejecting them, like tiktoken). Passing ``allowed_special=set()`` gives
    tiktoken's rules; with ``disallowed_special=()`` or :meth:`encode_ordinary` a special-token
    string is an ordinary word, which is not in the word vocabulary and so becomes ``<|unk|>``.
    Special tokens are cut out of the text before the word split, so ``"tea?<|endoftext|>In"``
    also yields the special id (the book's code needs spaces around it).
    """

    name = "simple"

    def __init__(
        self, vocab: Mapping[str, int], special_tokens: Sequence[str] = (EOT, UNK)
    ) -> None:
        if not vocab:
            raise TokenizerError("simple tokenizer: the vocabulary is empty")
        ids = list(vocab.values())
        if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
            raise TokenizerError(
                "simple tokenizer: vocabulary ids must be the integers 0..N-1, each used once"
            )
        self._vocab = dict(vocab)
        self._inverse = {i: t for t, i in self._vocab.items()}
        self._special = {t: self._vocab[t] for t in special_tokens if t in self._vocab}
        # Words only: a special-token string read as ordinary text is not a known word.
        self._words = {t: i for t, i in self._vocab.items() if t not in self._special}
        self._unk = self._special.get(UNK)

    @classmethod
    def from_corpus(cls, text: str) -> SimpleTokenizer:
        """Vocabulary = sorted unique words of `text`, then ``<|endoftext|>`` and ``<|unk|>``."""
        words = sorted(set(simple_words(text)) - {EOT, UNK})
        if not words:
            raise TokenizerError("simple tokenizer: the corpus has no words; give a non-empty text")
        tokens = [*words, EOT, UNK]
        return cls({t: i for i, t in enumerate(tokens)})

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialSet = "all",
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """Encode like the book's V2: special tokens in the text are allowed by default."""
        return super().encode(
            text, allowed_special=allowed_special, disallowed_special=disallowed_special
        )

    def encode_ordinary(self, text: str) -> list[int]:
        words = self._words
        unk = self._unk
        try:
            return [words[w] if unk is None else words.get(w, unk) for w in simple_words(text)]
        except KeyError as e:
            raise TokenizerError(
                f"simple tokenizer: the word {e.args[0]!r} is not in the vocabulary and it has "
                f"no {UNK} token; build the vocabulary from a corpus that contains it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        try:
            text = " ".join([self._inverse[i] for i in ids])
        except (KeyError, TypeError):
            converted = as_int_ids(ids)  # e.g. 0-d torch tensors, which hash by identity
            if converted is None or not all(i in self._inverse for i in converted):
                raise bad_id_error(ids, self.vocab_size) from None
            text = " ".join([self._inverse[i] for i in converted])
        return _SPACE_BEFORE_PUNCT.sub(r"\1", text)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def vocab(self) -> dict[str, int]:
        """Token -> id (words and special tokens)."""
        return dict(self._vocab)

    def token_to_id(self, token: str) -> int:
        try:
            return self._vocab[token]
        except KeyError:
            raise TokenizerError(f"simple tokenizer: {token!r} is not in the vocabulary") from None

    def id_to_token(self, id: int) -> str:
        try:
            return self._inverse[id]
        except KeyError:
            raise bad_id_error([id], self.vocab_size) from None

    def token_piece(self, id: int) -> str:
        return self.id_to_token(id)

    def to_dict(self) -> dict[str, Any]:
        return {"vocab": self._vocab, "special_tokens": list(self._special)}

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size}


def _describe_char(c: str) -> str:
    name = unicodedata.name(c, "unnamed")
    return f"{c!r} (U+{ord(c):04X} {name})"


class CharTokenizer(Tokenizer):
    """One token per character (code point) of a fixed alphabet, then optional special tokens.

    Lossless on its alphabet. A character outside it raises TokenizerError, or maps to
    ``<|unk|>`` when the tokenizer is made with ``unk=True``.
    """

    name = "char"

    def __init__(
        self,
        chars: Iterable[str],
        special_tokens: Sequence[str] = (EOT,),
        *,
        unk: bool = False,
    ) -> None:
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerError(
                    f"char tokenizer: alphabet entry {i} is {c!r}; each must be one character"
                )
        if len(set(chars)) != len(chars):
            raise TokenizerError("char tokenizer: the alphabet lists a character twice")
        if not chars:
            raise TokenizerError("char tokenizer: the alphabet is empty; give a non-empty corpus")
        specials = list(dict.fromkeys(special_tokens))
        if unk and UNK not in specials:
            specials.append(UNK)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise TokenizerError(
                    f"char tokenizer: special token {s!r} must be a non-empty string"
                )
        self._chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}
        self._special = {s: len(chars) + i for i, s in enumerate(specials)}
        self._itos = [*chars, *specials]
        self._unk = self._special[UNK] if unk else None

    @classmethod
    def from_corpus(
        cls, text: str, special_tokens: Sequence[str] = (EOT,), *, unk: bool = False
    ) -> CharTokenizer:
        """Alphabet = the sorted unique characters of `text`."""
        if not text:
            raise TokenizerError("char tokenizer: the corpus is empty; give a non-empty text")
        return cls(sorted(set(text)), special_tokens, unk=unk)

    @property
    def chars(self) -> list[str]:
        """The alphabet, in id order."""
        return list(self._chars)

    def encode_ordinary(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pass
        out = []
        for pos, c in enumerate(text):
            i = stoi.get(c, self._unk)
            if i is None:
                line = text.count("\n", 0, pos) + 1
                raise TokenizerError(
                    f"char tokenizer: character {_describe_char(c)} at position {pos} (line "
                    f"{line}) is not in the alphabet; build the alphabet from a corpus that "
                    "contains it",
                    Advice(f"or create the tokenizer with unk=True to map it to {UNK}", sep=", "),
                )
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        itos = self._itos
        try:
            if min(ids, default=0) < 0:
                raise IndexError
            return "".join([itos[i] for i in ids])
        except (IndexError, TypeError):
            raise bad_id_error(ids, self.vocab_size) from None

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def token_to_id(self, token: str) -> int:
        i = self._special.get(token, self._stoi.get(token))
        if i is None:
            raise TokenizerError(f"char tokenizer: {token!r} is not in the vocabulary")
        return i

    def id_to_token(self, id: int) -> str:
        if not isinstance(id, int) or not 0 <= id < len(self._itos):
            raise bad_id_error([id], self.vocab_size)
        return self._itos[id]

    def token_piece(self, id: int) -> str:
        return self.id_to_token(id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chars": self._chars,
            "special_tokens": list(self._special),
            "unk": self._unk is not None,
        }

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size}
