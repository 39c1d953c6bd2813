"""What every scratchgpt language model shares, whatever its family: the context check, the
default positions, the output head (with its inference fast path), GPT-2-style initialisation,
the device and the parameter count.

A family's model (GPTModel, LlamaModel) keeps its own constructor and forward pass, the code a
reader follows; this base holds only the bookkeeping around them, written once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model.inference import InferenceLinear, run_linears
from scratchgpt.model.kv_cache import KVCache, SlotKVCache
from scratchgpt.model.moe import MoEFeedForward


class DecoderModel(nn.Module):
    """Base of the decoder-only models: ``cfg``, ``tok_emb``, ``trf_blocks`` and ``out_head``."""

    cfg: GPTConfig
    tok_emb: nn.Embedding
    trf_blocks: nn.ModuleList
    out_head: nn.Linear
    fast_head: InferenceLinear | None = None  # see fuse_projections

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the final normalised hidden states: ``out_head(x)``."""
        return run_linears(self.fast_head, (self.out_head,), x)[0]

    def fuse_projections(self, *, column_major: bool = False, pack: bool = False) -> None:
        """Prepare the output head for inference without gradients (the blocks have their own
        ``fuse_projections``; see :class:`~scratchgpt.model.inference.InferenceLinear`)."""
        self.fast_head = InferenceLinear.make(
            (self.out_head,), column_major=column_major, pack=pack
        )

    def positions(
        self,
        in_idx: torch.Tensor,
        kv_cache: KVCache | SlotKVCache | None,
        position_ids: torch.Tensor | None,
    ) -> tuple[int, int, torch.Tensor]:
        """(new tokens T, cached positions, position ids) of a forward pass; a ConfigError when
        the sequence would pass the context length. Positions default to the ones after the
        cached ones."""
        t = in_idx.shape[1]
        past = kv_cache.pos if kv_cache is not None else 0
        if past + t > self.cfg.context_length:
            raise ConfigError(
                f"sequence of {past + t} tokens exceeds the model's context_length "
                f"({self.cfg.context_length}); keep only the last {self.cfg.context_length} tokens"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=in_idx.device)
        return t, past, position_ids

    def residual_projections(self) -> Iterator[nn.Linear]:
        """The layers that add into the residual stream, block by block: attention's out_proj
        and the feed-forward's last Linear (GPT-2's ff.layers[2], SwiGLU's fc3, every expert's
        fc3 in a mixture of experts)."""
        for block in self.trf_blocks:
            yield block.att.out_proj
            if isinstance(block.ff, MoEFeedForward):
                yield from (expert.fc3 for expert in block.ff.experts)
            else:
                yield [m for m in block.ff.modules() if isinstance(m, nn.Linear)][-1]

    @torch.no_grad()
    def reset_parameters_gpt2(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the projections that add
        into the residual stream scaled by 1/sqrt(2 * n_layers) so its variance stays bounded."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for proj in self.residual_projections():
            nn.init.normal_(proj.weight, mean=0.0, std=residual_std)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def num_parameters(self, exclude_head: bool = False) -> int:
        """Unique parameters (a tied head counts once); ``exclude_head`` drops the head's."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_head and not self.cfg.tie_weights:
            n -= sum(p.numel() for p in self.out_head.parameters())
        return n
