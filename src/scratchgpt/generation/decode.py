"""The cached decoding loop: the book's ``generate`` (chapter 5), made complete and fast.

With ``use_cache=True`` the prompt is run once (prefill) into a preallocated
:class:`~scratchgpt.model.KVCache`, then each step runs the model on one new token. Output tokens
go into a preallocated buffer (no per-step ``torch.cat``). Once prompt + generated tokens no longer
fit in the context window, every step re-runs the last ``context_size`` tokens, exactly as the
uncached book loop does, so cached and uncached generation give the same tokens.

Rows stop on their own: at ``eos_id`` (not appended; the row is padded with ``pad_id``) or at the
token that completes a stop string (kept).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import ConfigError
from scratchgpt.generation.inputs import (
    TokenIds,
    check_vocab,
    model_device,
    model_limits,
    prepare_prompt,
)
from scratchgpt.generation.sampling import (
    SamplingConfig,
    is_int,
    sample_next_token,
    sampling_from,
)
from scratchgpt.generation.stops import StopMatcher, check_stop_strings
from scratchgpt.model.inference import can_pack
from scratchgpt.model.kv_cache import KVCache

__all__ = [
    "ContextSlideWarning",
    "Decoder",
    "generate",
    "make_decoder",
    "optimize_for_decoding",
    "token_bytes",
]


class ContextSlideWarning(UserWarning):
    """Generation will run past the context window, where each token re-runs the whole window
    without the KV cache (several times slower per token). Silence it with
    ``warnings.filterwarnings("ignore", category=ContextSlideWarning)``."""


class Decoder:
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
        sampling: SamplingConfig,
        eos_id: int | Sequence[int] | None,
        pad_id: int,
        use_cache: bool,
        stops: Sequence[str] = (),
        tokenizer: Any = None,
        vocab_limit: int | None = None,
    ) -> None:
        self.model = model
        # Ids the tokenizer cannot decode are never sampled: an embedding table may have more
        # rows than the tokenizer has tokens (Qwen3: 151,936 rows for 151,669 tokens).
        self.vocab_limit = vocab_limit
        self.batch, self.prompt_len = ids.shape
        self.max_new_tokens = max_new_tokens
        self.context_size = context_size
        self.sampling = sampling
        self.temperature = float(sampling.temperature)
        self.pad_id = pad_id
        self.tokenizer = tokenizer
        device = ids.device
        # Every id that ends a row (Llama 3 instruct models end a turn with <|eot_id|> and a
        # text with <|end_of_text|>).
        eos = [] if eos_id is None else [eos_id] if is_int(eos_id) else list(eos_id)  # type: ignore[list-item]
        self.eos_ids = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
        self.generator = sampling.make_generator(device)
        # One matcher per row, on bytes: a stop string may end inside a multi-byte character.
        stop_bytes = [s.encode("utf-8") for s in stops]
        self.stops = [StopMatcher(stop_bytes) for _ in range(self.batch)] if stop_bytes else []
        # Only our GPTModel takes kv_cache/attention_mask; others get the book's plain loop.
        self.is_ours = hasattr(model, "cfg") and hasattr(model, "trf_blocks")
        if mask is not None and not self.is_ours:
            raise ConfigError("padded batches need a scratchgpt GPTModel (attention_mask support)")
        self.use_cache = use_cache and self.is_ours
        self.track = self.eos_ids is not None or bool(self.stops)

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
        for b, (tok, made) in enumerate(zip(nxt.tolist(), produced.tolist())):
            if made and self.stops[b].push(token_bytes(self.tokenizer, [tok])):
                self.finished[b] = True

    def _step(self) -> torch.Tensor:
        logits = self._logits()
        if self.vocab_limit is not None:
            logits[..., self.vocab_limit :] = float("-inf")
        nxt = sample_next_token(
            logits, self.temperature, self.sampling.top_k, self.sampling.top_p, self.generator
        )
        if self.track:
            produced = ~self.finished
            if self.eos_ids is not None:
                hit = torch.isin(nxt, self.eos_ids)
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


def token_bytes(tokenizer: Any, ids: Sequence[int]) -> bytes:
    """The bytes of token ids (``decode_bytes`` when the tokenizer has it: a token may hold
    part of a character)."""
    decode_bytes = getattr(tokenizer, "decode_bytes", None)
    if decode_bytes is not None:
        return bytes(decode_bytes(list(ids)))
    return tokenizer.decode(list(ids)).encode("utf-8")


def make_decoder(
    model: nn.Module,
    idx: TokenIds,
    *,
    max_new_tokens: int,
    sampling: SamplingConfig,
    context_size: int | None = None,
    eos_id: int | Sequence[int] | None = None,
    pad_id: int | None = None,
    use_cache: bool = True,
    attention_mask: torch.Tensor | None = None,
    stops: Sequence[str] = (),
    tokenizer: Any = None,
    vocab_limit: int | None = None,
) -> Decoder:
    """Check the options against ``model`` and prepare a :class:`Decoder` for prompt ``idx``
    (``stops`` already checked by :func:`~scratchgpt.generation.stops.check_stop_strings`)."""
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    eos = [] if eos_id is None else [eos_id] if is_int(eos_id) else eos_id
    if isinstance(eos, (str, bytes)) or not all(is_int(e) for e in eos):  # type: ignore[union-attr]
        raise ConfigError(
            f"eos_id must be an integer token id, a list of them, or None; got {eos_id!r}"
        )
    eos = list(eos)  # type: ignore[arg-type]
    if pad_id is None:
        pad_id = eos[0] if eos else 0
    elif not is_int(pad_id):
        raise ConfigError(f"pad_id must be an integer token id, got {pad_id!r}")
    context_size, vocab_size = model_limits(model, context_size)
    ids, mask = prepare_prompt(idx, attention_mask, pad_id, model_device(model))
    check_vocab(ids, mask, vocab_size)
    if vocab_size is not None and not 0 <= pad_id < vocab_size:
        raise ConfigError(f"pad_id {pad_id} is outside the vocabulary of {vocab_size} ids")
    if ids.shape[1] > context_size:
        warnings.warn(
            f"prompt of {ids.shape[1]} tokens is longer than the context size of "
            f"{context_size}; the model sees only its last {context_size} tokens",
            stacklevel=3,
        )
    dec = Decoder(
        model,
        ids,
        mask,
        max_new_tokens=max_new_tokens,
        context_size=context_size,
        sampling=sampling,
        eos_id=eos_id,
        pad_id=pad_id,
        use_cache=use_cache,
        stops=stops,
        tokenizer=tokenizer,
        vocab_limit=vocab_limit
        if is_int(vocab_limit) and is_int(vocab_size) and vocab_limit < vocab_size
        else None,
    )
    prompt_len = ids.shape[1]
    # The last new token is sampled from a forward pass over prompt_len + max_new_tokens - 1
    # tokens: the window slides only when that is longer than the context.
    if dec.use_cache and prompt_len <= context_size < prompt_len + max_new_tokens - 1:
        room = context_size - prompt_len + 1  # new tokens that fit before the window slides
        warnings.warn(
            f"{prompt_len} prompt token{'s' * (prompt_len != 1)} + up to {max_new_tokens} new "
            f"tokens go past the context size of {context_size}: after {room} new "
            f"token{'s' * (room != 1)}, each token re-runs the whole {context_size}-token window "
            f"without the KV cache (several times slower); ask for at most {room} new "
            f"token{'s' * (room != 1)} (or a shorter prompt) to keep it fast",
            ContextSlideWarning,
            stacklevel=3,
        )
    return dec


def generate(
    model: nn.Module,
    idx: TokenIds,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | Sequence[int] | None = None,
    use_cache: bool = True,
    *,
    attention_mask: torch.Tensor | None = None,
    stop_strings: str | Sequence[str] | None = None,
    tokenizer: Any = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
    sampling: SamplingConfig | None = None,
) -> torch.Tensor:
    """Continue token ids ``idx`` by up to ``max_new_tokens`` tokens; returns (B, T + new).

    The book's ``generate`` (same positional arguments), plus: top-p, a KV cache, batches of
    different lengths (``idx`` as a list of id lists, left-padded with ``pad_id``), per-row
    stops at ``eos_id`` (an id or a list of ids; not appended; the row is padded with ``pad_id``, default ``eos_id`` or
    0) and at ``stop_strings`` (needs ``tokenizer``; the token completing one is kept), and
    reproducible sampling with ``seed`` or ``generator`` (default: torch's global RNG, as the
    book). ``attention_mask`` (B, T) marks real tokens of an already left-padded tensor ``idx``.
    ``sampling`` gives temperature, top-k, top-p and seed/generator as one
    :class:`SamplingConfig` instead.
    """
    options = sampling_from(
        sampling,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        generator=generator,
    )
    dec = make_decoder(
        model,
        idx,
        max_new_tokens=max_new_tokens,
        sampling=options,
        context_size=context_size,
        eos_id=eos_id,
        pad_id=pad_id,
        use_cache=use_cache,
        attention_mask=attention_mask,
        stops=check_stop_strings(stop_strings, tokenizer),
        tokenizer=tokenizer,
    )
    dec.run()
    return dec.output()


@torch.no_grad()
def optimize_for_decoding(model: nn.Module, *, pack: bool | None = None) -> nn.Module:
    """Prepare ``model`` for fast inference on the device it is on; returns ``model``. Values,
    shapes, parameter objects and the state dict stay the same.

    Batch-1 decoding reads every weight once per token, so its speed is the speed of ``x @ W.T``
    with one row in ``x`` (see docs/benchmarks.md):

    - fp32 CPU weight matrices are stored column-major, the layout MKL's matrix-vector kernel
      reads fastest (a weight whose storage is (in, out), viewed transposed);
    - modules with a ``fuse_projections`` method (attention: query/key/value as one matmul;
      Llama 3.x / Qwen3 feed-forward: gate/up as one; the output head; float or int8 layers;
      see :mod:`scratchgpt.model.inference`) prepare their inference-only fast paths; training
      and LoRA keep using the plain layers;
    - ``pack``: bf16 CPU weights of those modules are also kept in oneDNN's blocked layout,
      whose one-row kernel is much faster than the plain layout's, at the cost of a second copy
      of those weights. None (default) packs when this PyTorch has the kernels and the copy
      fits in half the machine's free memory.

    A fast path is used only while its layers are unchanged; after moving or casting the model,
    or loading other weights into it, call this again to prepare it anew.
    """
    params = list(model.parameters())
    if not params:
        return model
    on_cpu = params[0].device.type == "cpu"
    if pack is None:
        pack = on_cpu and params[0].dtype == torch.bfloat16 and _copy_fits(params)
    pack = pack and can_pack()
    column_major = on_cpu and params[0].dtype == torch.float32
    for module in model.modules():
        fuse = getattr(module, "fuse_projections", None)
        if callable(fuse):  # int8 layers are fused too; layout and packing apply to float ones
            fuse(column_major=column_major, pack=pack)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            if w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
                # A head tied to the embedding is the same Parameter: the tie is kept, and the
                # embedding lookup (one row per token) does not mind the layout. bf16 weights
                # are left alone: their kernel is faster in the default layout.
                w.data = w.data.t().contiguous().t()
    return model


def _copy_fits(params: list[torch.Tensor]) -> bool:
    """Whether a second copy of these (unique) tensors fits in half the available memory."""
    nbytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in params}.values())
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    return 2 * nbytes <= available
