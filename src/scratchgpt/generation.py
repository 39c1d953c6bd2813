"""Text generation: the book's ``generate`` loop (chapter 5), made complete and fast.

One step picks the next token from the last position's logits, in the book's order:

    top-k filter -> temperature scaling -> softmax -> top-p (nucleus) filter -> sample

(``temperature == 0`` is greedy: argmax). ``generate`` works on token ids, like the book's
function; ``generate_text`` and ``stream_generate`` wrap it with a tokenizer.

Speed: with ``use_cache=True`` the prompt is run once (prefill) into a preallocated
:class:`~scratchgpt.model.KVCache`, then each step runs the model on one new token. Output tokens
go into a preallocated buffer (no per-step ``torch.cat``). Once prompt + generated tokens no longer
fit in the context window, every step re-runs the last ``context_size`` tokens, exactly as the
uncached book loop does, so cached and uncached generation give the same tokens.

Batches: ``idx`` may be a list of token-id lists of different lengths. They are left-padded and
run together, with an attention mask (padding is never attended to) and position ids that start
at 0 at each sequence's first real token, so each row continues as if it were alone.
"""

from __future__ import annotations

import codecs
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from scratchgpt.errors import ConfigError, DataError
from scratchgpt.model.kv_cache import KVCache

__all__ = [
    "TokenizerLike",
    "generate",
    "generate_text",
    "optimize_for_decoding",
    "sample_next_token",
    "stream_generate",
]

# Text helpers stop at the tokenizer's end-of-text token unless told otherwise.
AUTO = "auto"
EOT = "<|endoftext|>"

TokenIds = torch.Tensor | Sequence[int] | Sequence[Sequence[int]] | Sequence[torch.Tensor]


class TokenizerLike(Protocol):
    """What generation needs from a tokenizer (``scratchgpt.tokenizers`` ones have it all;
    ``decode_bytes`` is optional, ``decode`` is used without it)."""

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


# --------------------------------------------------------------------------------------------
# One step: logits -> next token
# --------------------------------------------------------------------------------------------


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V), in the book's order: top-k,
    temperature, softmax, then top-p; greedy (argmax) when ``temperature == 0``."""
    logits = logits.float()  # bf16 logits would make softmax/cumsum coarse
    if temperature == 0.0:
        # top-k and top-p never change the argmax, so greedy ignores them.
        return logits.argmax(dim=-1)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep a token while the mass before it is < top_p: the smallest set reaching top_p,
        # and always the most likely token.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.no_grad()
def optimize_for_decoding(model: nn.Module) -> nn.Module:
    """Store fp32 CPU weight matrices column-major, the layout CPU matrix-vector kernels read
    fastest; returns ``model``. Values, shapes and parameter objects stay the same.

    Batch-1 decoding reads every weight once per token, so its speed is the speed of
    ``x @ W.T`` with one row in ``x``. MKL's kernel streams a weight stored (in, out) markedly
    faster than nn.Linear's (out, in) (see docs/benchmarks.md); a weight whose storage is
    (in, out) and is viewed transposed is exactly that, with nothing else changed. bf16 weights
    are left alone: their kernel is faster in the default layout.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            if w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
                # A head tied to the embedding is the same Parameter: the tie is kept, and the
                # embedding lookup (one row per token) does not mind the layout.
                w.data = w.data.t().contiguous().t()
    return model


# --------------------------------------------------------------------------------------------
# Checking and preparing inputs
# --------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_options(
    max_new_tokens: Any,
    temperature: Any,
    top_k: Any,
    top_p: Any,
    seed: Any,
    generator: Any,
) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ConfigError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ConfigError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0
    ):
        raise ConfigError(f"top_p must be in (0, 1] (or None for no limit), got {top_p!r}")
    if seed is not None and generator is not None:
        raise ConfigError("pass either seed or generator, not both")
    if seed is not None and not _is_int(seed):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def _check_stops(stop_strings: Any, tokenizer: Any) -> list[str]:
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


def _model_limits(model: nn.Module, context_size: int | None) -> tuple[int, int | None]:
    """(context window, vocab size or None) for ``model``."""
    cfg = getattr(model, "cfg", None)
    max_ctx = getattr(cfg, "context_length", None)
    if context_size is None:
        if max_ctx is None:
            raise ConfigError("context_size is required for a model without a .cfg.context_length")
        context_size = max_ctx
    if not _is_int(context_size) or context_size < 1:
        raise ConfigError(f"context_size must be a positive integer, got {context_size!r}")
    if max_ctx is not None and context_size > max_ctx:
        raise ConfigError(
            f"context_size {context_size} is larger than the model's context_length {max_ctx}"
        )
    return context_size, getattr(cfg, "vocab_size", None)


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _prepare_prompt(
    idx: TokenIds,
    attention_mask: torch.Tensor | None,
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (B, T) on ``device`` and a bool mask (B, T) (None when nothing is padded)."""
    if isinstance(idx, torch.Tensor):
        if idx.dim() != 2:
            raise DataError(
                f"idx must be a (batch, tokens) tensor, got shape {tuple(idx.shape)}"
                + ("; use idx.unsqueeze(0) for one sequence" if idx.dim() == 1 else "")
            )
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise DataError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.shape[0] == 0 or idx.shape[1] == 0:
            raise DataError(
                f"empty prompt: idx has shape {tuple(idx.shape)}; give at least one token"
            )
        ids = idx.to(device=device, dtype=torch.long)
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(idx.shape):
                raise DataError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, idx has "
                    f"{tuple(idx.shape)}; they must match"
                )
            mask = attention_mask.to(device=device).bool()
            if not bool(mask[:, -1].all()):
                raise DataError(
                    "attention_mask: every sequence must end with a real token (left padding); "
                    "generation appends after the last column"
                )
            if bool((mask[:, 1:].int() < mask[:, :-1].int()).any()):
                raise DataError(
                    "attention_mask must be left padding (0s then 1s in each row); a 0 after a 1 "
                    "found"
                )
        return ids, mask
    if attention_mask is not None:
        raise ConfigError(
            "attention_mask is only for a padded tensor idx; a list of sequences is padded for you"
        )
    seqs = list(idx)
    if not seqs:
        raise DataError("empty prompt: idx is an empty list; give at least one token")
    if all(_is_int(t) for t in seqs):
        seqs = [seqs]  # a flat list of ids is one sequence
    rows: list[list[int]] = []
    for b, seq in enumerate(seqs):
        row = seq.tolist() if isinstance(seq, torch.Tensor) else list(seq)
        if not row:
            raise DataError(f"empty prompt: sequence {b} has no tokens; give at least one token")
        for j, t in enumerate(row):
            if not _is_int(t):
                raise DataError(f"sequence {b}, position {j}: token id {t!r} is not an integer")
        rows.append(row)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[b, width - len(row) :] = True
    padded = not bool(mask.all())
    return ids.to(device), (mask.to(device) if padded else None)


def _check_vocab(ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int | None) -> None:
    real = ids if mask is None else ids.masked_fill(~mask, 0)
    bad = (real < 0) if vocab_size is None else (real < 0) | (real >= vocab_size)
    if bool(bad.any()):
        b, j = (int(v) for v in bad.nonzero()[0])
        tok = int(ids[b, j])
        raise DataError(
            f"token id {tok} (sequence {b}, position {j}) is outside the model's vocabulary "
            f"of {vocab_size} ids (0..{(vocab_size or 0) - 1}); was the prompt encoded with a "
            "tokenizer that matches this model?"
        )


# --------------------------------------------------------------------------------------------
# The decoding loop
# --------------------------------------------------------------------------------------------


class _Decoder:
    """State of one generation run: output buffer, mask, KV cache, finished rows.

    ``steps()`` adds one token per iteration to ``buf`` and yields the (B,) bool tensor of rows
    that produced a real token in that step.
    """

    def __init__(
        self,
        model: nn.Module,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        context_size: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        eos_id: int | None,
        pad_id: int,
        use_cache: bool,
        stops: list[str],
        tokenizer: Any,
        generator: torch.Generator | None,
    ) -> None:
        self.model = model
        self.batch, self.prompt_len = ids.shape
        self.max_new_tokens = max_new_tokens
        self.context_size = context_size
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = top_p
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.generator = generator
        self.tokenizer = tokenizer
        self.stops = [s.encode("utf-8") for s in stops]
        # Only our GPTModel takes kv_cache/attention_mask; others get the book's plain loop.
        self.is_ours = hasattr(model, "cfg") and hasattr(model, "trf_blocks")
        if mask is not None and not self.is_ours:
            raise ConfigError("padded batches need a scratchgpt GPTModel (attention_mask support)")
        self.use_cache = use_cache and self.is_ours
        self.track = eos_id is not None or bool(self.stops)
        device = ids.device

        total = self.prompt_len + max_new_tokens
        self.buf = torch.empty((self.batch, total), dtype=torch.long, device=device)
        self.buf[:, : self.prompt_len] = ids
        self.mask: torch.Tensor | None = None
        if mask is not None:
            # Generated tokens are real tokens: the mask is 1 from the prompt's end on.
            self.mask = torch.ones((self.batch, total), dtype=torch.bool, device=device)
            self.mask[:, : self.prompt_len] = mask
        self.length = self.prompt_len
        self.steps_done = 0
        self.gen_len = torch.zeros(self.batch, dtype=torch.long, device=device)
        self.finished = torch.zeros(self.batch, dtype=torch.bool, device=device)
        self.all_rows = torch.ones(self.batch, dtype=torch.bool, device=device)
        self.stop_tail: list[bytearray] = [bytearray() for _ in range(self.batch)]
        self.kv: KVCache | None = None
        self.next_pos: torch.Tensor | None = None

    # The model sees at most `context_size` tokens: while everything fits, the cache holds the
    # past; afterwards the window slides and positions shift, so the window is re-run each step
    # (as the uncached loop does), which keeps both paths token-for-token identical.
    def _logits(self) -> torch.Tensor:
        n, c, model = self.length, self.context_size, self.model
        if self.use_cache and n <= c:
            if self.kv is None:
                # Room for every position that will be fed before the window slides.
                max_len = min(c, self.prompt_len + self.max_new_tokens - 1)
                self.kv = KVCache.for_model(model, self.batch, max_len=max_len)
                x = self.buf[:, :n]
                mask = pos = None
                if self.mask is not None:
                    mask = self.mask[:, :n]
                    pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)
                    self.next_pos = mask.sum(-1, keepdim=True)  # (B, 1) position of token n
            else:
                x = self.buf[:, n - 1 : n]
                mask = pos = None
                if self.mask is not None:
                    mask = self.mask[:, :n]
                    pos = self.next_pos
                    self.next_pos = self.next_pos + 1
            logits = model(
                x, attention_mask=mask, position_ids=pos, kv_cache=self.kv, last_token_only=True
            )
            return logits[:, -1, :]
        self.kv = None  # the window has slid: the cache can never be used again
        start = max(0, n - c)
        x = self.buf[:, start:n]
        if not self.is_ours:
            return model(x)[:, -1, :]
        mask = pos = None
        if self.mask is not None:
            mask = self.mask[:, start:n]
            pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)
        return model(x, attention_mask=mask, position_ids=pos, last_token_only=True)[:, -1, :]

    def _check_stop_strings(self, nxt: torch.Tensor, produced: torch.Tensor) -> None:
        longest = max(len(s) for s in self.stops)
        for b, (tok, made) in enumerate(zip(nxt.tolist(), produced.tolist())):
            if not made:
                continue
            piece = _token_bytes(self.tokenizer, [tok])
            tail = self.stop_tail[b]
            tail += piece
            # A new match must end inside the new token's bytes: search only that far back.
            window = bytes(tail[-(len(piece) + longest - 1) :]) if piece else b""
            if any(s in window for s in self.stops):
                self.finished[b] = True
            del tail[: max(0, len(tail) - longest)]

    def _step(self) -> torch.Tensor:
        logits = self._logits()
        nxt = sample_next_token(logits, self.temperature, self.top_k, self.top_p, self.generator)
        if self.track:
            produced = ~self.finished
            if self.eos_id is not None:
                hit = nxt == self.eos_id
                produced &= ~hit
                self.finished |= hit
            # The end-of-text token itself is not appended (as in the book); finished rows
            # are filled with pad_id from here on.
            nxt = torch.where(produced, nxt, torch.full_like(nxt, self.pad_id))
            self.gen_len += produced
            if self.stops:
                self._check_stop_strings(nxt, produced)
        else:
            produced = self.all_rows
        self.buf[:, self.length] = nxt
        self.length += 1
        self.steps_done += 1
        return produced

    def steps(self) -> Iterator[torch.Tensor]:
        was_training = self.model.training
        self.model.eval()
        try:
            for _ in range(self.max_new_tokens):
                # Inference mode only around the work, not across the yield: the caller's code
                # between steps must run in its own grad mode.
                with torch.inference_mode():
                    produced = self._step()
                    done = self.track and bool(self.finished.all())
                yield produced
                if done:
                    break
        finally:
            self.kv = None
            self.model.train(was_training)

    def run(self) -> None:
        for _ in self.steps():
            pass

    def new_lengths(self) -> list[int]:
        """Tokens generated per row (end-of-text excluded, stop-string token included)."""
        if self.track:
            return [int(v) for v in self.gen_len.tolist()]
        return [self.steps_done] * self.batch

    def output(self) -> torch.Tensor:
        """(B, T + new) ids; rows that finished early are padded with pad_id."""
        width = self.prompt_len + max(self.new_lengths(), default=0)
        # A copy: the preallocated buffer (sized for max_new_tokens) can then be freed.
        return self.buf[:, :width].clone()


def _token_bytes(tokenizer: Any, ids: Sequence[int]) -> bytes:
    decode_bytes = getattr(tokenizer, "decode_bytes", None)
    if decode_bytes is not None:
        return bytes(decode_bytes(list(ids)))
    return tokenizer.decode(list(ids)).encode("utf-8")


def _make_decoder(
    model: nn.Module,
    idx: TokenIds,
    max_new_tokens: int,
    context_size: int | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    use_cache: bool,
    attention_mask: torch.Tensor | None,
    stop_strings: Any,
    tokenizer: Any,
    seed: int | None,
    generator: torch.Generator | None,
    pad_id: int | None,
) -> _Decoder:
    _check_options(max_new_tokens, temperature, top_k, top_p, seed, generator)
    stops = _check_stops(stop_strings, tokenizer)
    if eos_id is not None and not _is_int(eos_id):
        raise ConfigError(f"eos_id must be an integer token id or None, got {eos_id!r}")
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0
    elif not _is_int(pad_id):
        raise ConfigError(f"pad_id must be an integer token id, got {pad_id!r}")
    context_size, vocab_size = _model_limits(model, context_size)
    device = _model_device(model)
    ids, mask = _prepare_prompt(idx, attention_mask, pad_id, device)
    _check_vocab(ids, mask, vocab_size)
    if vocab_size is not None and not 0 <= pad_id < vocab_size:
        raise ConfigError(f"pad_id {pad_id} is outside the vocabulary of {vocab_size} ids")
    if ids.shape[1] > context_size:
        warnings.warn(
            f"prompt of {ids.shape[1]} tokens is longer than the context size of "
            f"{context_size}; the model sees only its last {context_size} tokens",
            stacklevel=3,
        )
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    return _Decoder(
        model,
        ids,
        mask,
        max_new_tokens=max_new_tokens,
        context_size=context_size,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        use_cache=use_cache,
        stops=stops,
        tokenizer=tokenizer,
        generator=generator,
    )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate(
    model: nn.Module,
    idx: TokenIds,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    *,
    attention_mask: torch.Tensor | None = None,
    stop_strings: str | Sequence[str] | None = None,
    tokenizer: TokenizerLike | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
) -> torch.Tensor:
    """Continue token ids ``idx`` by up to ``max_new_tokens`` tokens; returns (B, T + new).

    The book's ``generate`` (same positional arguments), plus: top-p, a KV cache, batches of
    different lengths (``idx`` as a list of id lists, left-padded with ``pad_id``), per-row
    stops at ``eos_id`` (not appended; the row is padded with ``pad_id``, default ``eos_id`` or
    0) and at ``stop_strings`` (needs ``tokenizer``; the token completing one is kept), and
    reproducible sampling with ``seed`` or ``generator`` (default: torch's global RNG, as the
    book). ``attention_mask`` (B, T) marks real tokens of an already left-padded tensor ``idx``.
    """
    dec = _make_decoder(
        model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, use_cache,
        attention_mask, stop_strings, tokenizer, seed, generator, pad_id,
    )  # fmt: skip
    dec.run()
    return dec.output()


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Encode a prompt, letting it contain <|endoftext|> (documents are joined with it)."""
    specials = getattr(tokenizer, "special_tokens", None)
    if isinstance(specials, Mapping) and EOT not in specials:
        return list(tokenizer.encode(text))
    try:
        return list(tokenizer.encode(text, allowed_special={EOT}))
    except TypeError:
        # A tokenizer without special-token options (a stand-in, a character tokenizer).
        return list(tokenizer.encode(text))


def _resolve_eos(tokenizer: Any, eos_id: int | str | None) -> int | None:
    if eos_id == AUTO:
        return getattr(tokenizer, "eot_id", None)
    return eos_id  # type: ignore[return-value]


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate_text(
    model: nn.Module,
    tokenizer: TokenizerLike,
    prompt: str | Sequence[str],
    max_new_tokens: int = 50,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | str | None = AUTO,
    use_cache: bool = True,
    *,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
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
    stops = _check_stops(stop_strings, tokenizer)
    dec = _make_decoder(
        model, [encode_prompt(tokenizer, p) for p in prompts], max_new_tokens, context_size,
        temperature, top_k, top_p, _resolve_eos(tokenizer, eos_id), use_cache, None, stops,
        tokenizer, seed, generator, pad_id,
    )  # fmt: skip
    dec.run()
    start = dec.prompt_len
    texts = []
    for row, n in zip(dec.buf.tolist(), dec.new_lengths()):
        data = _token_bytes(tokenizer, row[start : start + n])
        texts.append(_cut_at_stop(data.decode("utf-8", errors="replace"), stops)[0])
    return texts[0] if single else texts


class TextStream(Iterator[str]):
    """What :func:`stream_generate` returns: an iterator of text pieces that, once exhausted (or
    closed), also tells how many tokens were generated and why generation ended."""

    def __init__(self, dec: _Decoder, tokenizer: Any, stops: list[str]) -> None:
        self._dec = dec
        self.finish_reason: str | None = None  # "stop" (end-of-text or a stop string) | "length"
        self._pieces = _stream(dec, tokenizer, stops, self)

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
    eos_id: int | str | None = AUTO,
    use_cache: bool = True,
    *,
    stop_strings: str | Sequence[str] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> TextStream:
    """Yield the continuation of one prompt (text, or its token ids) piece by piece as tokens
    arrive; the returned :class:`TextStream` then also has ``new_tokens`` and ``finish_reason``.

    A character whose UTF-8 bytes span several tokens is yielded whole once complete (never as
    U+FFFD), and text that could be the start of a stop string is held back until it is not, so
    ``"".join(stream_generate(...)) == generate_text(...)`` with the same options.
    """
    if isinstance(prompt, str):
        ids = encode_prompt(tokenizer, prompt)
    elif isinstance(prompt, Sequence) and all(_is_int(i) for i in prompt):
        ids = list(prompt)
    else:
        raise DataError(
            "stream_generate takes one prompt: a string or a list of token ids "
            "(use generate_text for a batch)"
        )
    if not prompt:
        raise DataError("empty prompt: give at least one character of text")
    stops = _check_stops(stop_strings, tokenizer)
    # Stop strings are matched on the text here; the decoder only needs to stop at eos.
    dec = _make_decoder(
        model, [ids], max_new_tokens, context_size, temperature, top_k,
        top_p, _resolve_eos(tokenizer, eos_id), use_cache, None, None, None, seed, generator,
        None,
    )  # fmt: skip
    return TextStream(dec, tokenizer, stops)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _stream(dec: _Decoder, tokenizer: Any, stops: list[str], out: TextStream) -> Iterator[str]:
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out.finish_reason = "length"
    text = ""  # continuation decoded so far
    sent = 0  # how much of it has been yielded
    longest = max((len(s) for s in stops), default=0)
    steps = dec.steps()
    try:
        for produced in steps:
            if not bool(produced[0]):
                out.finish_reason = "stop"
                break  # end-of-text
            tok = int(dec.buf[0, dec.length - 1])
            piece = utf8.decode(_token_bytes(tokenizer, [tok]))
            if not piece:
                continue  # an incomplete character: wait for its remaining bytes
            text += piece
            if not stops:
                sent = len(text)
                yield piece
                continue
            cut, found = _cut_at_stop(text[max(0, sent - longest) :], stops)
            if found:
                out.finish_reason = "stop"
                end = max(0, sent - longest) + len(cut)
                if end > sent:
                    yield text[sent:end]
                return
            safe = len(text) - _held_back(text, stops)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
    finally:
        steps.close()
    text += utf8.decode(b"", final=True)
    text, found = _cut_at_stop(text, stops)
    if found:
        out.finish_reason = "stop"
    if len(text) > sent:
        yield text[sent:]
