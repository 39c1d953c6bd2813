"""Preallocated key/value caches: the prompt is processed once, then one token per step.

:class:`KVCache`: keys and values of each layer live in two tensors of shape (B, H, max_len, hd),
filled left to right; attention reads the filled prefix as a view, so a step copies only the new
token. A sliding-window layer (Gemma 3's local layers) keeps only its window, in a ring.

:class:`SlotKVCache`: the cache of a continuous-batching server, one row ("slot") per sequence,
each row at its own position; a decode step writes each row's new token where that row is and
attention reads each row's own positions (local layers: rings, as in KVCache).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def ring_sizes(windows: Sequence[int | None], max_len: int) -> list[int | None]:
    """Per layer, the positions its ring keeps: its window, or None for a layer that keeps
    every position (a global layer, or a window no shorter than the cache)."""
    return [w if w is not None and w < max_len else None for w in windows]


def _sized_for(
    model: torch.nn.Module, rows: int, max_len: int | None
) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The constructor arguments of a cache of ``rows`` rows for ``model``: its layers, its
    key/value heads (grouped-query models store only those), ``max_len`` positions (default:
    its context length), each layer's sliding window, on its device, in the dtype attention
    computes in."""
    cfg = model.cfg
    device, dtype = _device_dtype(model)
    shape = (cfg.n_layers, rows, cfg.kv_heads, cfg.head_size, max_len or cfg.context_length)
    windows = [cfg.window(i) for i in range(cfg.n_layers)]
    return shape, {"windows": windows, "device": device, "dtype": dtype}


class KVCache:
    """Cached keys/values for all layers of one batch of sequences.

    A layer with a sliding window (``windows[i]``, Gemma 3's local layers) keeps only the last
    ``window`` positions, in a ring: its memory grows with the window, not the sequence (a
    local layer of a 32k-token Gemma 3 prompt holds 512 positions). Its :meth:`update` returns
    the cached positions the new queries can still see followed by the new ones, in order; the
    attention masks what lies outside each query's window.

    The ring is written twice (position p at p % window and at p % window + window), so the
    last ``window`` positions are always one contiguous, ordered slice of it: a decode step
    attends over a view, with no gather or copy, for twice the (bounded) memory.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        *,
        windows: Sequence[int | None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.windows = list(windows) if windows is not None else [None] * n_layers
        if len(self.windows) != n_layers:
            raise ValueError(f"{len(self.windows)} windows for {n_layers} layers")
        # Uninitialised: a position is always written before attention reads it, and zeroing a
        # long cache costs as much as a layer's matmul at prefill.
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rings = ring_sizes(self.windows, max_len)
        for ring in self.rings:
            shape = (batch_size, n_heads, max_len if ring is None else 2 * ring, head_dim)
            self.keys.append(torch.empty(shape, device=device, dtype=dtype))
            self.values.append(torch.empty(shape, device=device, dtype=dtype))
        self.max_len = max_len
        self.pos = 0  # number of positions already filled (same for every layer after a forward)

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, batch_size: int, max_len: int | None = None
    ) -> KVCache:
        """A cache sized for ``model`` (any scratchgpt model); max_len defaults to its context
        length. Grouped-query models store only their key/value heads, local layers only their
        window."""
        args, kwargs = _sized_for(model, batch_size, max_len)
        return cls(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    @property
    def nbytes(self) -> int:
        """Memory the cache holds (keys and values of every layer)."""
        return sum(t.nbytes for t in (*self.keys, *self.values))

    def update(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new (B, H, T, hd) keys/values at the current position; return the (B, H, S, hd)
        keys/values the new queries attend over: every position so far, or for a local layer
        the last ``window - 1`` cached ones and the new ones (always the last S positions)."""
        past, t = self.pos, keys.shape[2]
        end = past + t
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {end} positions requested, room for {self.max_len}"
            )
        cache_k, cache_v = self.keys[layer_idx], self.values[layer_idx]
        ring = self.rings[layer_idx]
        if ring is None or end <= ring:  # all positions so far, from 0
            for shift in (0,) if ring is None else (0, ring):  # a ring's second copy too
                cache_k[:, :, past + shift : end + shift] = keys
                cache_v[:, :, past + shift : end + shift] = values
            return cache_k[:, :, :end], cache_v[:, :, :end]
        # Position p lives at p % ring and p % ring + ring: any `ring` consecutive positions are
        # one slice. The first new query still sees the `seen` positions before it.
        seen = min(past, ring - 1)
        first = (past - seen) % ring
        if t == 1:  # a decode step: write, then attend over a view of the window
            at = past % ring
            for slot in (at, at + ring):
                cache_k[:, :, slot] = keys[:, :, 0]
                cache_v[:, :, slot] = values[:, :, 0]
            return cache_k[:, :, first : first + ring], cache_v[:, :, first : first + ring]
        all_k = torch.cat((cache_k[:, :, first : first + seen], keys.to(cache_k.dtype)), dim=2)
        all_v = torch.cat((cache_v[:, :, first : first + seen], values.to(cache_v.dtype)), dim=2)
        kept = min(t, ring)  # of the new positions, the ones a later query may see
        slots = torch.arange(end - kept, end, device=cache_k.device) % ring
        for shift in (0, ring):
            cache_k.index_copy_(2, slots + shift, all_k[:, :, -kept:])
            cache_v.index_copy_(2, slots + shift, all_v[:, :, -kept:])
        return all_k, all_v

    def advance(self, n: int) -> None:
        """Mark n more positions as filled (the model calls this after its last layer)."""
        self.pos += n

    def reset(self) -> None:
        self.pos = 0

    @classmethod
    def over(
        cls,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        max_len: int,
        windows: Sequence[int | None],
    ) -> KVCache:
        """A cache whose storage is the given per-layer (B, H, length, hd) tensors (views into a
        :class:`SlotKVCache`'s row), filled from position 0; ``windows`` as the constructor's."""
        cache = cls.__new__(cls)
        cache.keys, cache.values, cache.windows = list(keys), list(values), list(windows)
        cache.rings = ring_sizes(cache.windows, max_len)
        cache.max_len, cache.pos = max_len, 0
        return cache


class SlotKVCache:
    """Keys/values of ``slots`` independent sequences, each row at its own position.

    Each layer's storage is (slots, H, length + 1, hd): ``length`` positions hold a sequence
    (``max_len``, or a local layer's ring of ``window`` positions written twice, as in
    :class:`KVCache`), the extra last position is scratch space where idle rows write during a
    decode step (so a decode step never touches a row that is being prefilled).

    A decode step feeds one token per row: ``write_pos`` (slots,) says at which position each
    row's new key/value goes (:meth:`update` writes all rows at once) and ``active`` which rows
    hold a sequence; attention then runs row by row over that row's own filled positions
    (:meth:`rows`; in a local layer the last ``window`` of them, in ring order, which attention
    over one query does not depend on), so what a row computes never depends on the other rows
    or on the cache's size. ``pos`` stays 0: the shared position count of :class:`KVCache` has
    no meaning here.
    """

    def __init__(
        self,
        n_layers: int,
        slots: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        *,
        windows: Sequence[int | None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.windows = list(windows) if windows is not None else [None] * n_layers
        # Positions each layer keeps per row: all of them, or a local layer's ring.
        self.rings = ring_sizes(self.windows, max_len)
        # Uninitialised, as KVCache: attention reads only positions a row has written.
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for ring in self.rings:
            shape = (slots, n_heads, (max_len if ring is None else 2 * ring) + 1, head_dim)
            self.keys.append(torch.empty(shape, device=device, dtype=dtype))
            self.values.append(torch.empty(shape, device=device, dtype=dtype))
        self.slots = slots
        self.max_len = max_len
        self.scratch = max_len  # the position idle rows write to
        self.pos = 0
        self._all_rows = torch.arange(slots, device=device)
        self.active: list[bool] = [False] * slots
        self._lengths: list[int] = [0] * slots
        self.set_rows([max_len] * slots, [False] * slots)

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, slots: int, max_len: int | None = None
    ) -> SlotKVCache:
        """A cache of ``slots`` rows for ``model``, ``max_len`` positions each (default: the
        model's context length; a local layer keeps its window)."""
        args, kwargs = _sized_for(model, slots, max_len)
        return cls(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    @property
    def nbytes(self) -> int:
        """Memory the cache holds (keys and values of every layer and row)."""
        return sum(t.nbytes for t in (*self.keys, *self.values))

    def slot(self, row: int) -> KVCache:
        """A plain :class:`KVCache` over row ``row``, empty: a prompt is prefilled through it
        alone (batch 1), exactly as if no other row existed."""
        return KVCache.over(
            [k[row : row + 1, :, :-1] for k in self.keys],  # the scratch position left out
            [v[row : row + 1, :, :-1] for v in self.values],
            self.max_len,
            self.windows,
        )

    def set_rows(self, write_pos: list[int], active: list[bool]) -> None:
        """Before a decode step: where each row writes its new token (idle rows: the scratch
        position) and which rows hold a sequence."""
        device = self.keys[0].device
        self.write_pos = torch.tensor(write_pos, dtype=torch.long, device=device)
        self.active = list(active)
        self._lengths = [p + 1 for p in write_pos]
        # Per ring size, where each row writes (p % ring, then its copy p % ring + ring; a
        # global layer: p); idle rows write to their layer's scratch position, the last.
        idle = self.write_pos == self.scratch
        self._write_at: dict[int | None, tuple[torch.Tensor, ...]] = {None: (self.write_pos,)}
        for ring in set(self.rings) - {None}:
            at = self.write_pos % ring
            self._write_at[ring] = tuple(
                torch.where(idle, 2 * ring, at + shift) for shift in (0, ring)
            )

    def update(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one new (slots, H, 1, hd) key/value per row at ``write_pos``; returns the
        layer's whole storage (attention reads it through :meth:`rows`)."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        # index_put does not cast (a bf16 model's fp32 cache)
        new_k, new_v = keys[:, :, 0].to(k.dtype), values[:, :, 0].to(v.dtype)
        for at in self._write_at[self.rings[layer_idx]]:
            k[self._all_rows, :, at] = new_k
            v[self._all_rows, :, at] = new_v
        return k, v

    def rows(self, layer_idx: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(row, keys, values) of each active row: its (1, H, n, hd) filled positions (in a
        local layer, the last ``window`` of them, in ring order)."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        ring = self.rings[layer_idx] or self.max_len
        return [
            (r, k[r : r + 1, :, : min(n, ring)], v[r : r + 1, :, : min(n, ring)])
            for r, (on, n) in enumerate(zip(self.active, self._lengths))
            if on
        ]

    def advance(self, n: int) -> None:
        """Nothing to do: the caller moves each row's ``write_pos`` itself."""
