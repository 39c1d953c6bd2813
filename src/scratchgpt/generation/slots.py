"""Continuous batching: up to N sequences decoded together, each exactly as it would be alone.

A :class:`SlotDecoder` owns a :class:`~scratchgpt.model.SlotKVCache` with one row ("slot") per
sequence. A sequence joins by taking a free slot; each :meth:`SlotDecoder.step` then runs

- one decode forward pass over all N rows, one token per row that is decoding, each row at its
  own position with its own attention mask and its own sampling options and random generator;
- prefill chunks of the joining sequences, first come first served, up to ``prefill_chunk``
  prompt tokens in all (at least one chunk), so the running rows wait at most about one chunk
  while several short prompts that arrive together all start in the same step. A sequence's
  chunks are cut from its own prompt alone (``prefill_chunk`` tokens each), never by what else
  is joining.

A sequence that ends (end-of-text, a stop string, ``max_tokens``) or is removed frees its slot at
once; the next step can give it to a waiting sequence.

Why a sequence's tokens never depend on its neighbours: a CPU matmul can round differently for
different batch sizes (another kernel, another blocking of the sum), so every matmul with the
weights runs at the same shape whatever runs: N rows, idle ones fed a dummy token (whose
key/value go to a scratch position of the cache). With the shape fixed, a row's result is
computed by the same instructions in the same order whatever the other rows hold (tests check
it for the matmuls and for whole sequences). Attention, which has no weights, runs row by row
over the row's own filled positions, exactly as if the row were alone (a batched, masked
attention over a shared length would round by that length). A prefill runs on its sequence
alone (batch 1, its own chunks), and sampling runs row by row with the sequence's own generator.
The cost: the weight matmuls always compute N rows, useful or not, and N small attention calls
per layer replace one batched call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import ConfigError
from scratchgpt.generation.sampling import SamplingConfig, sample_next_token
from scratchgpt.generation.text import TextPieces
from scratchgpt.model.kv_cache import KVCache, SlotKVCache

__all__ = ["SlotDecoder", "SlotEvent", "SlotRequest"]

DEFAULT_PREFILL_CHUNK = 128


@dataclass(frozen=True)
class SlotRequest:
    """One sequence to generate: up to ``max_tokens`` tokens after ``prompt``, sampled with
    ``sampling``, ending at any of ``eos_ids`` (not counted) or where a stop string of ``stops``
    is complete (the text is cut before it)."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eos_ids: tuple[int, ...] = ()
    stops: tuple[str, ...] = ()


@dataclass
class SlotEvent:
    """What one step produced for one slot: ``piece`` of text to send (may be empty), the
    sampled ``token`` (None at end-of-text), and ``finish_reason`` ("stop" or "length") when
    the sequence ended, which frees the slot."""

    slot: int
    piece: str
    token: int | None
    new_tokens: int
    finish_reason: str | None = None


class _Sequence:
    """A sequence in a slot: its request, its cache row, generator and text so far."""

    def __init__(self, request: SlotRequest, cache: KVCache, tokenizer: Any, order: int) -> None:
        self.request = request
        self.cache = cache  # the slot's row, for prefill
        self.generator = request.sampling.make_generator(cache.device)
        self.pieces = TextPieces(tokenizer, request.stops)
        self.order = order  # joining order: prefills run first come, first served
        self.length = 0  # positions of the cache filled
        self.next_token: int | None = None  # sampled, to be fed at the next decode step
        self.new_tokens = 0

    @property
    def prefilling(self) -> bool:
        return self.length < len(self.request.prompt)


class SlotDecoder:
    """Decodes up to ``slots`` sequences at once (see the module docstring); ``max_len`` is
    each slot's room in tokens (default: the model's context length)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        slots: int = 8,
        max_len: int | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        if slots < 1:
            raise ConfigError(f"slots must be at least 1, got {slots}")
        if prefill_chunk < 1:
            raise ConfigError(f"prefill_chunk must be at least 1, got {prefill_chunk}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.slots = slots
        self.prefill_chunk = prefill_chunk
        with torch.inference_mode():
            self.cache = SlotKVCache.for_model(model, slots, max_len)
        self.max_len = self.cache.max_len
        self.device = self.cache.device
        vocab = int(model.cfg.vocab_size)
        limit = getattr(tokenizer, "vocab_size", None)
        # Ids the tokenizer cannot decode are never sampled (an embedding table may be larger).
        self.vocab_limit = limit if isinstance(limit, int) and limit < vocab else None
        self.active: dict[int, _Sequence] = {}
        self._order = itertools.count()

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.active)

    @property
    def busy(self) -> bool:
        """Whether any slot holds a sequence."""
        return bool(self.active)

    def add(self, request: SlotRequest) -> int:
        """Give ``request`` the lowest free slot and return it; its prompt is prefilled by the
        next steps. A ConfigError when no slot is free or the sequence cannot fit."""
        n = len(request.prompt)
        if n < 1 or request.max_tokens < 1:
            raise ConfigError("a sequence needs at least one prompt token and max_tokens >= 1")
        # The last token sampled is never fed back: prompt + max_tokens - 1 positions.
        if n + request.max_tokens - 1 > self.max_len:
            raise ConfigError(
                f"a prompt of {n} tokens and max_tokens {request.max_tokens} need "
                f"{n + request.max_tokens - 1} positions; a slot holds {self.max_len}"
            )
        free = [s for s in range(self.slots) if s not in self.active]
        if not free:
            raise ConfigError(f"all {self.slots} slots are in use")
        slot = free[0]
        self.active[slot] = _Sequence(
            request, self.cache.slot(slot), self.tokenizer, next(self._order)
        )
        return slot

    def remove(self, slot: int) -> None:
        """Free ``slot`` now (a cancelled sequence); nothing of it is read again."""
        self.active.pop(slot, None)

    def step(self, emit: Callable[[list[SlotEvent]], None] | None = None) -> list[SlotEvent]:
        """One decode pass over the decoding slots, then prefill chunks of the joining sequences
        in the order they came, while their tokens fit in one chunk's budget (at least one);
        the events of the tokens sampled. With ``emit``, each pass's events go to it as soon as
        they exist (a sequence's first token need not wait for the other prefills of the step)
        and the list returned is empty."""
        events: list[SlotEvent] = []

        def out(new: list[SlotEvent]) -> None:
            if emit is None:
                events.extend(new)
            elif new:
                emit(new)

        with torch.inference_mode():
            decoding = [s for s, seq in self.active.items() if seq.next_token is not None]
            if decoding:
                out(self._decode(decoding))
            joining = [s for s, seq in self.active.items() if seq.prefilling]
            budget = self.prefill_chunk
            for slot in sorted(joining, key=lambda s: self.active[s].order):
                size = self._next_chunk(slot)
                if size > budget and budget < self.prefill_chunk:
                    break  # the budget is spent: the next chunk waits for the next step
                budget -= size
                event = self._prefill_chunk(slot)
                if event is not None:
                    out([event])
        return events

    def _next_chunk(self, slot: int) -> int:
        """Tokens in ``slot``'s next prefill chunk: cut from its own prompt alone."""
        seq = self.active[slot]
        return min(len(seq.request.prompt), seq.length + self.prefill_chunk) - seq.length

    def _prefill_chunk(self, slot: int) -> SlotEvent | None:
        seq = self.active[slot]
        prompt = seq.request.prompt
        end = seq.length + self._next_chunk(slot)
        x = torch.tensor([prompt[seq.length : end]], dtype=torch.long, device=self.device)
        logits = self.model(x, kv_cache=seq.cache, last_token_only=True)  # (1, 1, V)
        seq.length = end
        if seq.prefilling:
            return None
        return self._sampled(slot, logits[:, -1])

    def _decode(self, slots: list[int]) -> list[SlotEvent]:
        n, scratch = self.slots, self.cache.scratch
        tokens = [0] * n
        where = [scratch] * n  # idle rows write to the scratch position
        for s in slots:
            seq = self.active[s]
            tokens[s], where[s] = seq.next_token, seq.length  # type: ignore[call-overload]
        self.cache.set_rows(where, [w != scratch for w in where])
        x = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]  # (N, 1)
        pos = torch.tensor([0 if w == scratch else w for w in where], device=self.device)
        logits = self.model(
            x, position_ids=pos[:, None], kv_cache=self.cache, last_token_only=True
        )  # (N, 1, V)
        events = []
        for s in slots:
            seq = self.active[s]
            seq.length += 1
            seq.next_token = None
            events.append(self._sampled(s, logits[s : s + 1, -1]))
        return events

    def _sampled(self, slot: int, logits: torch.Tensor) -> SlotEvent:
        """Sample the next token of ``slot`` from its (1, V) logits, alone: the same operations
        on the same values whatever the other rows hold."""
        seq = self.active[slot]
        if self.vocab_limit is not None:
            logits = logits.clone()
            logits[..., self.vocab_limit :] = float("-inf")
        opts = seq.request.sampling
        token = int(
            sample_next_token(logits, opts.temperature, opts.top_k, opts.top_p, seq.generator)[0]
        )
        if token in seq.request.eos_ids:
            piece, _ = seq.pieces.finish()
            return self._finished(slot, piece, None, "stop")
        seq.new_tokens += 1
        piece, stopped = seq.pieces.push(token)
        if stopped:
            return self._finished(slot, piece, token, "stop")
        if seq.new_tokens >= seq.request.max_tokens:
            rest, found = seq.pieces.finish()
            return self._finished(slot, piece + rest, token, "stop" if found else "length")
        seq.next_token = token
        return SlotEvent(slot, piece, token, seq.new_tokens)

    def _finished(self, slot: int, piece: str, token: int | None, reason: str) -> SlotEvent:
        seq = self.active.pop(slot)
        return SlotEvent(slot, piece, token, seq.new_tokens, reason)

    def warm_up(self) -> None:
        """Run one prefill and one decode step (first calls allocate and pick kernels), then
        free the slot."""
        slot = self.add(SlotRequest([0], max_tokens=2))
        while slot in self.active:
            self.step()
