"""A preallocated key/value cache: the prompt is processed once, then one token per step.

Keys and values of every layer live in two tensors of shape (layers, B, H, max_len, hd), filled
left to right; attention reads the filled prefix as a view, so a step copies only the new token.
"""

from __future__ import annotations

import torch


class KVCache:
    """Cached keys/values for all layers of one batch of sequences."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        # Uninitialised: a position is always written before attention reads it, and zeroing a
        # long cache costs as much as a layer's matmul at prefill.
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # number of positions already filled (same for every layer after a forward)

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, batch_size: int, max_len: int | None = None
    ) -> KVCache:
        """A cache sized for ``model`` (any scratchgpt model); max_len defaults to its context
        length. Grouped-query models store only their key/value heads."""
        cfg = model.cfg
        p = next(model.parameters())
        dtype = p.dtype
        if torch.is_autocast_enabled(p.device.type):
            dtype = torch.get_autocast_dtype(p.device.type)
        return cls(
            cfg.n_layers,
            batch_size,
            cfg.kv_heads,
            cfg.head_size,
            max_len or cfg.context_length,
            device=p.device,
            dtype=dtype,
        )

    def update(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new (B, H, T, hd) keys/values at the current position; return all (B, H, S, hd)."""
        end = self.pos + keys.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {end} positions requested, room for {self.max_len}"
            )
        self.keys[layer_idx, :, :, self.pos : end] = keys
        self.values[layer_idx, :, :, self.pos : end] = values
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark n more positions as filled (the model calls this after its last layer)."""
        self.pos += n

    def reset(self) -> None:
        self.pos = 0
