"""Gemma 3 (the book's bonus chapter "Gemma 3 from scratch"): Qwen3's decoder with five changes.

- attention: local layers see a sliding window of the last ``sliding_window`` tokens (512),
  every sixth layer is global; local and global layers rotate with their own RoPE theta (10k
  and 1M); scores are scaled by 1/sqrt(query_pre_attn_scalar);
- norms: Gemma's RMSNorm (scale by 1 + weight), four per block: before and after attention,
  before and after the feed-forward (the outputs are normalised before they join the residual);
- feed-forward: GeGLU, ``fc3(gelu_tanh(fc1(x)) * fc2(x))``;
- embeddings: multiplied by sqrt(emb_dim) (in the weights' dtype, as Gemma does);
- output: logits optionally soft-capped (``final_softcap``).

Module names follow the book's Gemma 3 code (tok_emb, trf_blocks, att, ff, input_layernorm,
post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm, final_norm,
out_head), so LoRA, training, the KV cache and the weight loaders treat it as the others.
"""

from __future__ import annotations

import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model.attention import GroupedQueryAttention, causal_allowed
from scratchgpt.model.base import DecoderModel
from scratchgpt.model.feed_forward import GeGLUFeedForward
from scratchgpt.model.kv_cache import KVCache, SlotKVCache
from scratchgpt.model.lora import apply_lora
from scratchgpt.model.norms import GemmaRMSNorm
from scratchgpt.model.rope import RotaryEmbedding


class GemmaBlock(nn.Module):
    """x + post_attention_layernorm(att(input_layernorm(x))), then
    x + post_feedforward_layernorm(ff(pre_feedforward_layernorm(x)))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        scalar = cfg.query_pre_attn_scalar
        self.window = cfg.window(layer_idx)
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
            norm=GemmaRMSNorm,
            window=self.window,
            scale=None if scalar is None else scalar**-0.5,
        )
        self.ff = GeGLUFeedForward(cfg.emb_dim, cfg.ff_dim)
        self.input_layernorm = GemmaRMSNorm(cfg.emb_dim, cfg.ln_eps)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.emb_dim, cfg.ln_eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.emb_dim, cfg.ln_eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.emb_dim, cfg.ln_eps)
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
        h = self.att(self.input_layernorm(x), cos, sin, kv_cache, layer_idx, allowed)
        x = x + self.drop_shortcut(self.post_attention_layernorm(h))
        h = self.ff(self.pre_feedforward_layernorm(x))
        return x + self.drop_shortcut(self.post_feedforward_layernorm(h))


class Gemma3Model(DecoderModel):
    """Gemma 3 (text): scaled token embeddings, ``n_layers`` blocks (local and global), final
    RMSNorm, output head (tied to the embeddings in the released models).

    As GPTModel and LlamaModel, the config is the whole architecture (a classifier head with
    ``num_classes``, LoRA adapters with ``lora``), and ``forward`` takes the same arguments.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.family != "gemma3":
            raise ConfigError(f"Gemma3Model builds the gemma3 family, not {cfg.family!r}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(GemmaBlock(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = GemmaRMSNorm(cfg.emb_dim, cfg.ln_eps)
        if cfg.num_classes is None:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        else:
            self.out_head = nn.Linear(cfg.emb_dim, cfg.num_classes)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        # Global layers rotate with rope_base (and its scaling), local ones with their own theta.
        self.rope = RotaryEmbedding(cfg.head_size, cfg.rope_base, cfg.rope_scaling)
        local_base = cfg.rope_local_base if cfg.rope_local_base is not None else cfg.rope_base
        self.rope_local = RotaryEmbedding(cfg.head_size, local_base)
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
        x = self.tok_emb(in_idx)  # (B, T, E)
        # sqrt(emb_dim) rounded to the weights' dtype first, as Gemma's reference does.
        x = self.drop_emb(x * torch.tensor(self.cfg.emb_dim**0.5, dtype=x.dtype))
        rope_global = self.rope(position_ids, x.dtype)  # (cos, sin), each (1 or B, 1, T, hd)
        rope_local = self.rope_local(position_ids, x.dtype)

        allowed = None
        if attention_mask is not None:
            allowed = causal_allowed(attention_mask, t, past)
        for i, block in enumerate(self.trf_blocks):
            cos, sin = rope_global if block.window is None else rope_local
            x = block(x, cos, sin, kv_cache, i, allowed)
        if kv_cache is not None:
            kv_cache.advance(t)

        if last_token_only:
            x = x[:, -1:, :]
        logits = self.head(self.final_norm(x))  # (B, T, vocab)
        cap = self.cfg.final_softcap
        if cap is not None and self.cfg.num_classes is None:
            logits = torch.tanh(logits / cap) * cap
        return logits
