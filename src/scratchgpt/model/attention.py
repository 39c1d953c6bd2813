"""Causal multi-head self-attention (the book's chapter 3), with an optional KV cache.

Shapes: B batch, T new tokens, S keys visible (past + new), H heads, hd head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.model.kv_cache import KVCache


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
        # (B, T, d_out) -> (B, H, T, hd)
        queries = self.W_query(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if kv_cache is not None:
            keys, values = kv_cache.update(layer_idx, keys, values)  # (B, H, S, hd)
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

        context = context.transpose(1, 2).reshape(b, t, self.d_out)  # (B, T, d_out)
        return self.out_proj(context)
