"""RMSNorm (Llama 3.x, Qwen3): x / sqrt(mean(x^2) + eps) * scale, no mean subtraction, no shift;
Gemma's variant scales by 1 + scale.

GPT-2's LayerNorm lives with the GPT-2 model (scratchgpt.model.gpt).
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension.

    Computed in float32 and cast back before the scale, as Llama and Qwen3 do, so a bf16 model
    normalises exactly as its reference implementation.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.scale * x.to(dtype)


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm: the scale is stored as an offset from 1 (``x_norm * (1 + scale)``, scale
    initialised to zeros), and the product is taken in float32 before casting back, as Gemma's
    reference does (a bf16 model rounds once, at the end)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * (1.0 + self.scale.float())).to(dtype)
