"""Text in, text out: ``generate_text`` (a prompt or a batch of prompts) and ``stream_generate``
(one prompt, piece by piece), over the decoding loop of :mod:`scratchgpt.generation.decode`.

Both stop at the tokenizer's end-of-text token unless told otherwise, and cut the text before the
first stop string; ``"".join(stream_generate(...)) == generate_text(...)`` with the same options.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from scratchgpt.errors import DataError
from scratchgpt.generation.decode import Decoder, make_decoder, token_bytes
from scratchgpt.generation.sampling import SamplingConfig, is_int, sampling_from
from scratchgpt.generation.stops import StopMatcher, check_stop_strings

__all__ = [
    "AUTO",
    "EOT",
    "TextPieces",
    "TextStream",
    "TokenizerLike",
    "encode_prompt",
    "generate_text",
    "stream_generate",
]

# Text helpers stop at the tokenizer's end-of-text token unless told otherwise.
AUTO = "auto"
EOT = "<|endoftext|>"


class TokenizerLike(Protocol):
    """What generation needs from a tokenizer (``scratchgpt.tokenizers`` ones have it all;
    ``decode_bytes`` is optional, ``decode`` is used without it)."""

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Encode a prompt, letting it contain <|endoftext|> (documents are joined with it).

    A Hugging Face tokenizer (Llama 3, Qwen3) reads every special token in a prompt as the token
    it is, as ``transformers`` does (a chat template's text is full of them), and the prompt
    starts with its BOS token when the tokenizer prepends one (Llama 3's <|begin_of_text|>)
    and the text does not already begin with it."""
    if getattr(tokenizer, "name", None) == "hf":
        ids = list(tokenizer.encode(text, allowed_special="all"))
        bos = list(tokenizer.bos_ids)
        return ids if ids[: len(bos)] == bos else bos + ids
    specials = getattr(tokenizer, "special_tokens", None)
    if isinstance(specials, Mapping) and EOT not in specials:
        return list(tokenizer.encode(text))
    try:
        return list(tokenizer.encode(text, allowed_special={EOT}))
    except TypeError:
        # A tokenizer without special-token options (a stand-in, a character tokenizer).
        return list(tokenizer.encode(text))


def stop_ids(tokenizer: Any) -> list[int]:
    """Every id that ends a generation for ``tokenizer``: its ``stop_ids`` (end of text and end
    of turn, e.g. Llama 3's <|end_of_text|> and <|eot_id|>), else its end-of-text id."""
    ids = getattr(tokenizer, "stop_ids", None)
    if ids is not None:
        return list(ids)
    eot = getattr(tokenizer, "eot_id", None)
    return [] if eot is None else [eot]


def _resolve_eos(
    tokenizer: Any, eos_id: int | Sequence[int] | str | None
) -> int | Sequence[int] | None:
    if eos_id == AUTO:
        return stop_ids(tokenizer) or None
    return eos_id  # type: ignore[return-value]


def generate_text(
    model: nn.Module,
    tokenizer: TokenizerLike,
    prompt: str | Sequence[str],
    max_new_tokens: int = 50,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | Sequence[int] | str | None = AUTO,
    use_cache: bool = True,
    *,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
    sampling: SamplingConfig | None = None,
) -> str | list[str]:
    """The continuation of ``prompt`` as text (a list for a list of prompts, run as one batch).

    Options as :func:`generate`; ``eos_id="auto"`` stops at the tokenizer's end-of-text token
    (``None``: never stop early). The text is cut before the first stop string.
    """
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if not prompts or any(not isinstance(p, str) for p in prompts):
        raise DataError("prompt must be a string or a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not p:
            where = "" if single else f" (prompt {i})"
            raise DataError(f"empty prompt{where}: give at least one character of text")
    options = sampling_from(
        sampling, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, generator=generator
    )
    stops = check_stop_strings(stop_strings, tokenizer)
    dec = make_decoder(
        model,
        [encode_prompt(tokenizer, p) for p in prompts],
        max_new_tokens=max_new_tokens,
        sampling=options,
        context_size=context_size,
        eos_id=_resolve_eos(tokenizer, eos_id),
        pad_id=pad_id,
        use_cache=use_cache,
        stops=stops,
        tokenizer=tokenizer,
        vocab_limit=getattr(tokenizer, "vocab_size", None),
    )
    dec.run()
    start = dec.prompt_len
    matcher = StopMatcher(stops)
    texts = []
    for row, n in zip(dec.buf.tolist(), dec.new_lengths()):
        data = token_bytes(tokenizer, row[start : start + n])
        texts.append(matcher.cut(data.decode("utf-8", errors="replace"))[0])
    return texts[0] if single else texts


class TextStream(Iterator[str]):
    """What :func:`stream_generate` returns: an iterator of text pieces that, once exhausted (or
    closed), also tells how many tokens were generated and why generation ended."""

    def __init__(self, dec: Decoder, tokenizer: Any, stops: list[str]) -> None:
        self._dec = dec
        self.finish_reason: str | None = None  # "stop" (end-of-text or a stop string) | "length"
        self._pieces = _stream(dec, tokenizer, StopMatcher(stops), self)

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating (e.g. the client went away)."""
        self._pieces.close()

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far (end-of-text not counted)."""
        return self._dec.new_lengths()[0]


def stream_generate(
    model: nn.Module,
    tokenizer: TokenizerLike,
    prompt: str | Sequence[int],
    max_new_tokens: int = 50,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | Sequence[int] | str | None = AUTO,
    use_cache: bool = True,
    *,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sampling: SamplingConfig | None = None,
) -> TextStream:
    """Yield the continuation of one prompt (text, or its token ids) piece by piece as tokens
    arrive; the returned :class:`TextStream` then also has ``new_tokens`` and ``finish_reason``.

    A character whose UTF-8 bytes span several tokens is yielded whole once complete (never as
    U+FFFD), and text that could be the start of a stop string is held back until it is not, so
    ``"".join(stream_generate(...)) == generate_text(...)`` with the same options.
    """
    if isinstance(prompt, str):
        ids = encode_prompt(tokenizer, prompt)
    elif isinstance(prompt, Sequence) and all(is_int(i) for i in prompt):
        ids = list(prompt)
    else:
        raise DataError(
            "stream_generate takes one prompt: a string or a list of token ids "
            "(use generate_text for a batch)"
        )
    if not prompt:
        raise DataError("empty prompt: give at least one character of text")
    options = sampling_from(
        sampling, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, generator=generator
    )
    stops = check_stop_strings(stop_strings, tokenizer)
    # Stop strings are matched on the text here; the decoder only needs to stop at eos.
    dec = make_decoder(
        model,
        [ids],
        max_new_tokens=max_new_tokens,
        sampling=options,
        context_size=context_size,
        eos_id=_resolve_eos(tokenizer, eos_id),
        use_cache=use_cache,
        vocab_limit=getattr(tokenizer, "vocab_size", None),
    )
    return TextStream(dec, tokenizer, stops)


class TextPieces:
    """One sequence's tokens as text pieces to send: a character whose UTF-8 bytes span several
    tokens comes out whole once complete (never as U+FFFD), the text is cut before the first stop
    string, and text that could still become one is held back until it cannot."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = StopMatcher(list(stops))
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # continuation decoded so far
        self.sent = 0  # how much of it has been handed out

    def push(self, token: int) -> tuple[str, bool]:
        """(text to send now, whether a stop string ended in it) after the next token."""
        piece = self._utf8.decode(token_bytes(self.tokenizer, [token]))
        if not piece:
            return "", False  # an incomplete character: wait for its remaining bytes
        self.text += piece
        stops = self.stops
        if not stops:
            self.sent = len(self.text)
            return piece, False
        # The text sent so far holds no stop string: search from just before its end.
        start = max(0, self.sent - stops.longest)
        cut, found = stops.cut(self.text[start:])
        if found:
            end = max(self.sent, start + len(cut))
            out, self.sent = self.text[self.sent : end], end
            return out, True
        safe = len(self.text) - stops.held_back(self.text)
        if safe <= self.sent:
            return "", False
        out, self.sent = self.text[self.sent : safe], safe
        return out, False

    def finish(self) -> tuple[str, bool]:
        """(the rest of the text, whether a stop string cut it) once no token follows."""
        self.text += self._utf8.decode(b"", final=True)
        text, found = self.stops.cut(self.text)
        out = text[self.sent :] if len(text) > self.sent else ""
        self.sent = max(self.sent, len(text))
        return out, found


def _stream(
    dec: Decoder, tokenizer: Any, stops: StopMatcher[str], out: TextStream
) -> Iterator[str]:
    pieces = TextPieces(tokenizer, stops.stops)
    out.finish_reason = "length"
    steps = dec.steps()
    try:
        for produced in steps:
            if not bool(produced[0]):
                out.finish_reason = "stop"
                break  # end-of-text
            piece, stopped = pieces.push(int(dec.buf[0, dec.length - 1]))
            if piece:
                yield piece
            if stopped:
                out.finish_reason = "stop"
                return
    finally:
        steps.close()
    piece, found = pieces.finish()
    if found:
        out.finish_reason = "stop"
    if piece:
        yield piece
