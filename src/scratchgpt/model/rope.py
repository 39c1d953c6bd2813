"""Rotary position embeddings (RoPE), used by Llama 3.x and Qwen3 instead of GPT-2's learned
position table (the book's bonus chapter "Converting GPT to Llama").

Each pair of dimensions (i, i + head_dim/2) of a query or key is rotated by the angle
``position * inv_freq[i]``, so the dot product of a query and a key depends on their distance
only. Nothing is learned and nothing is stored: the angles are computed from the positions on
each call (cheap next to the matmuls), so any position a sequence reaches works, left-padded
rows included. The maths follows Hugging Face's implementation step for step (same rounding),
which the parity tests rely on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scratchgpt.config import RopeScaling


def rope_inv_freq(head_dim: int, base: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """(head_dim/2,) float32 angular frequencies ``base^(-2i/head_dim)``, with Llama 3's scaling."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    if scaling is None:
        return inv_freq
    # Llama 3: long wavelengths (low frequencies) are stretched by `factor`, short ones kept, and
    # the band in between interpolated smoothly.
    old = scaling.original_context_length
    low_freq_wavelen = old / scaling.low_freq_factor
    high_freq_wavelen = old / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for given positions. Holds no tensors (so a model built on the meta
    device needs nothing rebuilt); the frequencies are computed once per device."""

    def __init__(self, head_dim: int, base: float, scaling: RopeScaling | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.scaling = scaling
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            inv = rope_inv_freq(self.head_dim, self.base, self.scaling)
            self._inv_freq[device] = inv.to(device)
        return self._inv_freq[device]

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (T,) or (B, T) -> cos, sin of shape (1 or B, 1, T, head_dim)."""
        pos = position_ids if position_ids.dim() == 2 else position_ids[None]
        freqs = pos.float()[..., None] * self.inv_freq(pos.device)  # (B, T, hd/2), fp32
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, H, T, hd) by the angles of their positions."""
    return (x * cos) + (rotate_half(x) * sin)
