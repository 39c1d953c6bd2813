"""Llama 3.x and Qwen3 (the book's bonus chapters "Llama 3.2 from scratch" and "Qwen3 from
scratch"): GPT-2's decoder with four parts swapped.

- positions: rotary embeddings on queries and keys (model.rope) instead of a learned table;
- norms: RMSNorm (model.norms) instead of LayerNorm, no biases anywhere;
- feed-forward: SwiGLU, ``fc3(silu(fc1(x)) * fc2(x))``, instead of the GELU MLP;
- attention: grouped-query attention (model.attention), fewer key/value heads than query heads.

Qwen3 is this same model with ``qk_norm`` (RMSNorm on each head's queries and keys) and its own
``head_dim``; ``cfg.family`` says which one a config describes. Module names follow the book
(tok_emb, trf_blocks, att.W_query, ff.fc1, norm1, final_norm, out_head), as GPT-2's do, so LoRA,
training, the KV cache and the weight loaders treat every family alike.
"""

from __future__ import annotations

import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model.attention import GroupedQueryAttention, causal_allowed
from scratchgpt.model.base import DecoderModel
from scratchgpt.model.feed_forward import SwiGLUFeedForward
from scratchgpt.model.kv_cache import KVCache, SlotKVCache
from scratchgpt.model.lora import apply_lora
from scratchgpt.model.moe import MoEFeedForward
from scratchgpt.model.norms import RMSNorm
from scratchgpt.model.rope import RotaryEmbedding


class LlamaBlock(nn.Module):
    """Pre-RMSNorm block: x + att(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.att = GroupedQueryAttention(
            d_in=cfg.emb_dim,
            num_heads=cfg.n_heads,
            num_kv_groups=cfg.kv_heads,
            head_dim=cfg.head_size,
            dropout=cfg.drop_rate,
            qk_norm=cfg.qk_norm,
            norm_eps=cfg.ln_eps,
            qkv_bias=cfg.qkv_bias,
            impl=cfg.attention,
        )
        # Qwen3-MoE: a mixture of SwiGLU experts in the layers the config makes sparse.
        self.ff: SwiGLUFeedForward | MoEFeedForward
        if cfg.is_moe_layer(layer_idx):
            self.ff = MoEFeedForward(cfg)
        else:
            self.ff = SwiGLUFeedForward(cfg.emb_dim, cfg.ff_dim)
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.ln_eps)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.ln_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cos, sin, kv_cache, layer_idx, allowed))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class LlamaModel(DecoderModel):
    """Llama 3.x / Qwen3: token embeddings, ``n_layers`` blocks, final RMSNorm, output head.

    As GPTModel, the config is the whole architecture (a classifier head with ``num_classes``,
    LoRA adapters with ``lora``), and ``forward`` takes the same arguments.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.family not in ("llama3", "qwen3"):
            raise ConfigError(
                f"LlamaModel builds the llama3 and qwen3 families, not {cfg.family!r}"
            )
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(LlamaBlock(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.ln_eps)
        if cfg.num_classes is None:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        else:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        self.rope = RotaryEmbedding(cfg.head_size, cfg.rope_base, cfg.rope_scaling)
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
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T); arguments as GPTModel's."""
        t, past, position_ids = self.positions(in_idx, kv_cache, position_ids)
        x = self.drop_emb(self.tok_emb(in_idx))  # (B, T, E)
        cos, sin = self.rope(position_ids, x.dtype)  # (1 or B, 1, T, hd)

        allowed = None
        if attention_mask is not None:
            allowed = causal_allowed(attention_mask, t, past)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, kv_cache, i, allowed)
        if kv_cache is not None:
            kv_cache.advance(t)

        if last_token_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        return self.head(x)  # (B, T, vocab)
