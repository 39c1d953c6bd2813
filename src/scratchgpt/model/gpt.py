"""The GPT model (the book's chapter 4): embeddings, transformer blocks, output head.

Module and parameter names are the book's (tok_emb, trf_blocks, att.W_query, ff.layers, norm1,
scale/shift, out_head), so a learner finds the code they read, and the book's state dicts load
key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model.attention import MultiHeadAttention
from scratchgpt.model.base import DecoderModel
from scratchgpt.model.inference import InferenceLinear, run_linears
from scratchgpt.model.kv_cache import KVCache, SlotKVCache
from scratchgpt.model.lora import apply_lora


class LayerNorm(nn.Module):
    """The book's LayerNorm: scale * (x - mean) / sqrt(var + eps) + shift, biased variance.

    Computed by ``F.layer_norm``, which is exactly that formula in one fused kernel (a test checks
    it against the written-out maths).
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU, tanh approximation (as GPT-2):
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), fused by ``F.gelu``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Position-wise MLP: expand 4x, GELU, project back."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )
        # Inference-only fast paths (see fuse_projections); None until prepared.
        self.fast_up: InferenceLinear | None = None
        self.fast_down: InferenceLinear | None = None

    def fuse_projections(self, *, column_major: bool = False, pack: bool = False) -> None:
        """Prepare inference without gradients: each Linear gets its fast path (see
        :class:`~scratchgpt.model.inference.InferenceLinear`)."""
        up, _, down = self.layers
        self.fast_up = InferenceLinear.make((up,), column_major=column_major, pack=pack)
        self.fast_down = InferenceLinear.make((down,), column_major=column_major, pack=pack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_up is None and self.fast_down is None:
            return self.layers(x)
        up, gelu, down = self.layers
        hidden = gelu(run_linears(self.fast_up, (up,), x)[0])
        return run_linears(self.fast_down, (down,), hidden)[0]


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm1(x)), then x + ff(norm2(x)), dropout on each branch."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            impl=cfg.attention,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer_idx, allowed))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(DecoderModel):
    """GPT: token + position embeddings, ``n_layers`` transformer blocks, final norm, head.

    The config is the whole architecture: with ``num_classes`` the head is the classifier's
    ``Linear(emb_dim, num_classes)`` (with a bias), and with ``lora`` the chosen Linear layers
    carry LoRA adapters, so a checkpoint's weights load into ``GPTModel(its config)`` as they are.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.family != "gpt2":
            raise ConfigError(
                f"GPTModel builds GPT-2 models, not family {cfg.family!r}; use "
                "scratchgpt.model.build_model(cfg), which picks the family's model"
            )
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.ln_eps)
        if cfg.num_classes is None:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        else:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        if cfg.init == "gpt2":
            self.reset_parameters_gpt2()
        if cfg.lora is not None:
            apply_lora(self, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, freeze=False)

    def forward(
        self,
        in_idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | SlotKVCache | None = None,
        last_token_only: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T).

        attention_mask: (B, S) 1 for real tokens, 0 for padding, over all S = cached + new
        positions (left-padded batches). position_ids: (B, T), defaults to consecutive positions
        after the cached ones. kv_cache: reads past keys/values and appends the new ones.
        last_token_only: compute logits for the last position only (generation).
        A :class:`SlotKVCache` (continuous batching) takes one token per row, each row at its
        own ``position_ids``; attention then runs row by row over each row's own cache.
        """
        t, past, position_ids = self.positions(in_idx, kv_cache, position_ids)
        x = self.tok_emb(in_idx) + self.pos_emb(position_ids)  # (B, T, E)
        x = self.drop_emb(x)

        allowed = None
        if attention_mask is not None:
            allowed = self._allowed(attention_mask, t, past)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache, i, allowed)
        if kv_cache is not None:
            kv_cache.advance(t)

        if last_token_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        return self.head(x)  # (B, T, vocab)

    def _allowed(self, attention_mask: torch.Tensor, t: int, past: int) -> torch.Tensor:
        """(B, 1, T, S) bool: causal AND key is not padding. Each query may always see itself,
        so rows of padding queries are never empty (their outputs are ignored anyway)."""
        s = past + t
        if attention_mask.shape[-1] != s:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions, expected {s}"
            )
        mask = self.trf_blocks[0].att.mask
        causal = ~mask[past:s, :s]  # (T, S)
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        idx = torch.arange(t, device=allowed.device)
        allowed[:, :, idx, past + idx] = True
        return allowed
