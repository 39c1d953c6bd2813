"""Preallocated key/value caches: the prompt is processed once, then one token per step.

:class:`KVCache`: keys and values of every layer live in two tensors of shape
(layers, B, H, max_len, hd), filled left to right; attention reads the filled prefix as a view,
so a step copies only the new token.

:class:`SlotKVCache`: the cache of a continuous-batching server, one row ("slot") per sequence,
each row at its own position; a decode step writes each row's new token where that row is and
attention reads every position of every row, masked (a fixed shape whatever the rows hold).
"""

from __future__ import annotations

from typing import Any

import torch


def _device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a model's cache lives and the dtype its attention computes in (autocast's, if on)."""
    p = next(model.parameters())
    dtype = p.dtype
    if torch.is_autocast_enabled(p.device.type):
        dtype = torch.get_autocast_dtype(p.device.type)
    if p.device.type == "cpu" and dtype == torch.bfloat16:
        # A decoding step reads the whole cache, and PyTorch's CPU attention kernels run about
        # 3x slower on bf16 than on fp32 (benchmarks/generation.py, context 1024): a bf16 model
        # keeps its keys and values in fp32 there and attends in fp32 (twice the cache memory).
        dtype = torch.float32
    return p.device, dtype


def _sized_for(
    model: torch.nn.Module, rows: int, max_len: int | None
) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The constructor arguments of a cache of ``rows`` rows for ``model``: its layers, its
    key/value heads (grouped-query models store only those), ``max_len`` positions (default:
    its context length), on its device, in the dtype attention computes in."""
    cfg = model.cfg
    device, dtype = _device_dtype(model)
    shape = (cfg.n_layers, rows, cfg.kv_heads, cfg.head_size, max_len or cfg.context_length)
    return shape, {"device": device, "dtype": dtype}


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
        args, kwargs = _sized_for(model, batch_size, max_len)
        return cls(*args, **kwargs)

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

    @classmethod
    def over(cls, keys: torch.Tensor, values: torch.Tensor, max_len: int) -> KVCache:
        """A cache whose storage is ``keys``/``values`` (layers, B, H, >= max_len, hd), e.g. one
        row of a :class:`SlotKVCache`, filled from position 0."""
        cache = cls.__new__(cls)
        cache.keys, cache.values, cache.max_len, cache.pos = keys, values, max_len, 0
        return cache


class SlotKVCache:
    """Keys/values of ``slots`` independent sequences, each row at its own position.

    Storage is (layers, slots, H, max_len + 1, hd): positions 0..max_len-1 hold a sequence, the
    extra last position is scratch space where idle rows write during a decode step (so a
    decode step never touches a row that is being prefilled).

    A decode step feeds one token per row: ``write_pos`` (slots,) says where each row's new
    key/value goes (:meth:`update` writes all rows at once) and ``active`` which rows hold a
    sequence; attention then runs row by row over that row's own filled positions
    (:meth:`rows`), so what a row computes never depends on the other rows or on the cache's
    size. ``pos`` stays 0: the shared position count of :class:`KVCache` has no meaning here.
    """

    def __init__(
        self,
        n_layers: int,
        slots: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (n_layers, slots, n_heads, max_len + 1, head_dim)
        # Uninitialised, as KVCache: attention reads only positions a row has written.
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.slots = slots
        self.max_len = max_len
        self.scratch = max_len  # the position idle rows write to
        self.pos = 0
        self._all_rows = torch.arange(slots, device=device)
        self.write_pos = torch.full((slots,), max_len, dtype=torch.long, device=device)
        self.active: list[bool] = [False] * slots
        self._lengths: list[int] = [0] * slots

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, slots: int, max_len: int | None = None
    ) -> SlotKVCache:
        """A cache of ``slots`` rows for ``model``, ``max_len`` positions each (default: the
        model's context length)."""
        args, kwargs = _sized_for(model, slots, max_len)
        return cls(*args, **kwargs)

    def slot(self, row: int) -> KVCache:
        """A plain :class:`KVCache` over row ``row``, empty: a prompt is prefilled through it
        alone (batch 1), exactly as if no other row existed."""
        return KVCache.over(
            self.keys[:, row : row + 1], self.values[:, row : row + 1], self.max_len
        )

    def set_rows(self, write_pos: list[int], active: list[bool]) -> None:
        """Before a decode step: where each row writes its new token (idle rows: the scratch
        position) and which rows hold a sequence."""
        self.write_pos = torch.tensor(write_pos, dtype=torch.long, device=self.keys.device)
        self.active = list(active)
        self._lengths = [p + 1 for p in write_pos]

    def update(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one new (slots, H, 1, hd) key/value per row at ``write_pos``; returns the
        layer's whole storage (attention reads it through :meth:`rows`)."""
        dtype = self.keys.dtype  # index_put does not cast (a bf16 model's fp32 cache)
        self.keys[layer_idx, self._all_rows, :, self.write_pos] = keys[:, :, 0].to(dtype)
        self.values[layer_idx, self._all_rows, :, self.write_pos] = values[:, :, 0].to(dtype)
        return self.keys[layer_idx], self.values[layer_idx]

    def rows(self, layer_idx: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(row, keys, values) of each active row: its (1, H, n, hd) filled positions."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        return [
            (r, k[r : r + 1, :, :n], v[r : r + 1, :, :n])
            for r, (on, n) in enumerate(zip(self.active, self._lengths))
            if on
        ]

    def advance(self, n: int) -> None:
        """Nothing to do: the caller moves each row's ``write_pos`` itself."""
