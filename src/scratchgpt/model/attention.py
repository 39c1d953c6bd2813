"""Causal self-attention: the book's multi-head attention (chapter 3) and the grouped-query
attention of Llama 3.x / Qwen3 / Gemma 3 (optionally over a sliding window), each with an
optional KV cache.

Shapes: B batch, T new tokens, S keys visible (past + new), H heads, hd head_dim.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.model.inference import InferenceLinear, run_linears
from scratchgpt.model.kv_cache import KVCache, SlotKVCache
from scratchgpt.model.norms import RMSNorm
from scratchgpt.model.rope import apply_rope


class MultiHeadAttention(nn.Module):
    """The book's MultiHeadAttention: W_query/W_key/W_value, a causal mask, out_proj.

    ``impl="explicit"`` runs the book's maths step by step (scores, mask, softmax, dropout,
    weights @ values); ``impl="sdpa"`` hands the same maths to the fused
    ``scaled_dot_product_attention``. A test proves they agree.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.impl = impl
        # Creation order matters: it fixes how the default init consumes the RNG (book fidelity).
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal = "future, may not attend". Not saved with the weights.
        self.register_buffer(
            "mask",
            torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1),
            persistent=False,
        )
        # Inference-only fast paths (see fuse_projections); None until prepared.
        self.fast_qkv: InferenceLinear | None = None
        self.fast_out: InferenceLinear | None = None

    def fuse_projections(self, *, column_major: bool = False, pack: bool = False) -> None:
        """Prepare inference without gradients: W_query, W_key and W_value run as one matmul,
        out_proj as its own (see :class:`~scratchgpt.model.inference.InferenceLinear`; a
        projection wrapped by LoRA keeps its plain path)."""
        self.fast_qkv = InferenceLinear.make(
            (self.W_query, self.W_key, self.W_value), column_major=column_major, pack=pack
        )
        self.fast_out = InferenceLinear.make((self.out_proj,), column_major=column_major, pack=pack)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_in). ``allowed``: optional bool (B, 1, T, S), True where a query may see a key
        (built by GPTModel when there is padding); without it the plain causal mask applies."""
        b, t, _ = x.shape
        queries, keys, values = run_linears(
            self.fast_qkv, (self.W_query, self.W_key, self.W_value), x
        )
        # (B, T, d_out) -> (B, H, T, hd)
        queries = queries.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        keys = keys.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if isinstance(kv_cache, SlotKVCache):
            kv_cache.update(layer_idx, keys, values)
            context = slot_attention(queries, kv_cache.rows(layer_idx), self._see_all)
            context = context.transpose(1, 2).reshape(b, t, self.d_out)
            return run_linears(self.fast_out, (self.out_proj,), context)[0]
        if kv_cache is not None:
            keys, values = kv_cache.update(layer_idx, keys, values)  # (B, H, S, hd)
        queries = queries.to(keys.dtype)  # a bf16 model's fp32 cache on a CPU (see KVCache)
        s = keys.shape[2]

        if self.impl == "explicit":
            attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, S)
            if allowed is None:
                # New queries sit at absolute positions s-t .. s-1.
                attn_scores = attn_scores.masked_fill(self.mask[s - t : s, :s], float("-inf"))
            else:
                attn_scores = attn_scores.masked_fill(~allowed, float("-inf"))
            attn_weights = torch.softmax(attn_scores / self.head_dim**0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (B, H, T, hd)
        else:
            p = self.dropout.p if self.training else 0.0
            if allowed is not None:
                context = F.scaled_dot_product_attention(
                    queries, keys, values, allowed, dropout_p=p
                )
            elif t == s:
                context = F.scaled_dot_product_attention(
                    queries, keys, values, dropout_p=p, is_causal=True
                )
            elif t == 1:
                # One new token sees every cached key: no mask needed.
                context = F.scaled_dot_product_attention(queries, keys, values, dropout_p=p)
            else:
                causal = ~self.mask[s - t : s, :s]
                context = F.scaled_dot_product_attention(queries, keys, values, causal, dropout_p=p)

        context = context.transpose(1, 2).reshape(b, t, self.d_out).to(x.dtype)  # (B, T, d_out)
        return run_linears(self.fast_out, (self.out_proj,), context)[0]

    def _see_all(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries that may see every key (one new token after its cached ones)."""
        q = q.to(k.dtype)  # a bf16 model's fp32 cache on a CPU (see KVCache)
        if self.impl == "explicit":
            weights = torch.softmax((q @ k.transpose(2, 3)) / self.head_dim**0.5, dim=-1)
            return weights @ v
        return F.scaled_dot_product_attention(q, k, v)


def slot_attention(
    queries: torch.Tensor,
    rows: list[tuple[int, torch.Tensor, torch.Tensor]],
    see_all: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Attention of a decode step over a :class:`SlotKVCache`: each active row's one new query
    (``queries`` (B, H, 1, hd)) over that row's own keys, alone, so its result depends on
    nothing else; idle rows get zeros. Returns (B, H, 1, hd)."""
    context = torch.zeros_like(queries)
    for r, keys, values in rows:
        context[r : r + 1] = see_all(queries[r : r + 1], keys, values)
    return context


def causal_allowed(attention_mask: torch.Tensor, t: int, past: int) -> torch.Tensor:
    """(B, 1, T, S) bool for T new queries after ``past`` cached positions: causal AND key is not
    padding (``attention_mask`` (B, S), 1 for real tokens). Each query may always see itself, so
    rows of padding queries are never empty (their outputs are ignored anyway)."""
    s = past + t
    if attention_mask.shape[-1] != s:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, expected {s}"
        )
    device = attention_mask.device
    causal = torch.ones(t, s, dtype=torch.bool, device=device).tril_(diagonal=past)  # (T, S)
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    idx = torch.arange(t, device=device)
    allowed[:, :, idx, past + idx] = True
    return allowed


def sliding_window_allowed(t: int, s: int, window: int, device: torch.device) -> torch.Tensor:
    """(T, S) bool for T new queries that are the last T of S key positions: a query sees
    itself and the ``window - 1`` positions before it (a band under the diagonal)."""
    ones = torch.ones(t, s, dtype=torch.bool, device=device)
    return ones.tril(s - t) & ~ones.tril(s - t - window)


class GroupedQueryAttention(nn.Module):
    """Causal attention with fewer key/value heads than query heads (Llama 3.x, Qwen3, Gemma 3).

    ``num_kv_groups`` key/value heads each serve ``num_heads // num_kv_groups`` query heads, so
    the KV cache holds only the key/value heads (4x smaller for Llama 3.2 1B). Queries and keys
    are rotated by RoPE (positions) after the optional per-head RMSNorm of Qwen3 and Gemma 3
    (``qk_norm``, of class ``norm``). There is no causal-mask buffer: a 131k-token context would
    make it 17 GB.

    Gemma 3's options: ``window`` makes this a local layer, where a query sees only itself and
    the ``window - 1`` positions before it (sliding-window attention); ``scale`` replaces
    1/sqrt(head_dim) as the scores' factor.
    """

    def __init__(
        self,
        d_in: int,
        num_heads: int,
        num_kv_groups: int,
        head_dim: int,
        dropout: float = 0.0,
        *,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        qkv_bias: bool = False,
        impl: str = "sdpa",
        norm: type[nn.Module] = RMSNorm,
        window: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_groups:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of {num_kv_groups}")
        self.num_heads = num_heads
        self.num_kv_groups = num_kv_groups
        self.group_size = num_heads // num_kv_groups
        self.head_dim = head_dim
        self.impl = impl
        self.window = window
        self.scale = scale  # None: the kernels' own 1/sqrt(head_dim)
        self.W_query = nn.Linear(d_in, num_heads * head_dim, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_kv_groups * head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_kv_groups * head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(num_heads * head_dim, d_in, bias=False)
        self.q_norm = norm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = norm(head_dim, norm_eps) if qk_norm else None
        self.dropout = nn.Dropout(dropout)
        # Inference-only fast paths (see fuse_projections); None until prepared.
        self.fast_qkv: InferenceLinear | None = None
        self.fast_out: InferenceLinear | None = None

    def fuse_projections(self, *, column_major: bool = False, pack: bool = False) -> None:
        """Prepare inference without gradients: W_query, W_key and W_value run as one matmul,
        out_proj as its own (see :class:`~scratchgpt.model.inference.InferenceLinear`; a
        projection wrapped by LoRA keeps its plain path)."""
        self.fast_qkv = InferenceLinear.make(
            (self.W_query, self.W_key, self.W_value), column_major=column_major, pack=pack
        )
        self.fast_out = InferenceLinear.make((self.out_proj,), column_major=column_major, pack=pack)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_in); cos/sin: RoPE tables for the T new positions (see model.rope);
        ``allowed``: optional bool (B, 1, T, S) for padded batches (see :func:`causal_allowed`)."""
        b, t, _ = x.shape
        queries, keys, values = run_linears(
            self.fast_qkv, (self.W_query, self.W_key, self.W_value), x
        )
        queries = queries.view(b, t, self.num_heads, self.head_dim)  # (B, T, H, hd)
        keys = keys.view(b, t, self.num_kv_groups, self.head_dim)  # (B, T, G, hd)
        values = values.view(b, t, self.num_kv_groups, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        queries = apply_rope(queries.transpose(1, 2), cos, sin)  # (B, H, T, hd)
        keys = apply_rope(keys.transpose(1, 2), cos, sin)  # (B, G, T, hd)
        values = values.transpose(1, 2)
        if isinstance(kv_cache, SlotKVCache):
            kv_cache.update(layer_idx, keys, values)
            see_all = functools.partial(self._attend, allowed=None)
            context = slot_attention(queries, kv_cache.rows(layer_idx), see_all)
        else:
            past = 0
            if kv_cache is not None:
                past = kv_cache.pos
                keys, values = kv_cache.update(layer_idx, keys, values)  # (B, G, S, hd)
            context = self._attend(queries, keys, values, allowed, past)  # (B, H, T, hd)
        context = context.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim).to(x.dtype)
        return run_linears(self.fast_out, (self.out_proj,), context)[0]

    def _attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        allowed: torch.Tensor | None,
        past: int = 0,
    ) -> torch.Tensor:
        """Attention of T queries (the last T positions) over S keys/values, which are the
        last S positions of the ``past + T`` so far (all of them, or a local layer's window).
        ``allowed`` (B, 1, T, past + T), if given, masks padding."""
        t, s = queries.shape[2], keys.shape[2]
        p = self.dropout.p if self.training else 0.0
        queries = queries.to(keys.dtype)  # a bf16 model's fp32 cache on a CPU (see KVCache)
        if allowed is not None and allowed.shape[-1] > s:
            allowed = allowed[..., -s:]  # a local layer's cache holds only its window
        if self.window is not None and s > self.window:
            band = sliding_window_allowed(t, s, self.window, queries.device)
            allowed = band if allowed is None else allowed & band
        if self.impl == "explicit":
            # Each key/value head repeated for the query heads of its group: (B, H, S, hd).
            keys = keys.repeat_interleave(self.group_size, dim=1)
            values = values.repeat_interleave(self.group_size, dim=1)
            attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, S)
            if self.scale is None:
                attn_scores = attn_scores / self.head_dim**0.5
            else:
                attn_scores = attn_scores * self.scale
            if allowed is None:
                allowed = torch.ones(t, s, dtype=torch.bool, device=queries.device).tril_(s - t)
            attn_scores = attn_scores.masked_fill(~allowed, float("-inf"))
            attn_weights = torch.softmax(attn_scores, dim=-1)
            return self.dropout(attn_weights) @ values
        scale = self.scale
        gqa = self.group_size > 1
        if t == 1 and gqa:
            # One new token (a decode step): the query heads of a group become the rows of one
            # (B, G, group, hd) query, so every key/value head is read once, with no copies and
            # no mask beyond padding (``allowed`` (B, 1, 1, S) broadcasts over the rows).
            b, g = queries.shape[0], self.num_kv_groups
            q = queries.view(b, g, self.group_size, self.head_dim)
            context = F.scaled_dot_product_attention(
                q, keys, values, allowed, dropout_p=p, scale=scale
            )
            return context.reshape(b, self.num_heads, 1, self.head_dim)
        if allowed is None and t == 1:
            # One new token sees every cached key: no mask needed.
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=p, scale=scale)
        if allowed is None and t == s:
            return F.scaled_dot_product_attention(
                queries, keys, values, dropout_p=p, is_causal=True, enable_gqa=gqa, scale=scale
            )
        if allowed is None:
            allowed = torch.ones(t, s, dtype=torch.bool, device=queries.device).tril_(s - t)
        return F.scaled_dot_product_attention(
            queries, keys, values, allowed, dropout_p=p, enable_gqa=gqa, scale=scale
        )
