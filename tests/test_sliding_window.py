"""Sliding-window attention as a building block: a local layer equals full attention under a
banded causal mask (each query sees itself and the window - 1 positions before it), on both
implementations, with padding, and through the KV cache, whose local layers keep only the
window (a ring), so their memory does not grow with the sequence."""

from __future__ import annotations

import json

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.errors import ConfigError
from scratchgpt.model import KVCache, build_model
from scratchgpt.model.attention import (
    GroupedQueryAttention,
    causal_allowed,
    sliding_window_allowed,
)
from scratchgpt.model.kv_cache import SlotKVCache
from scratchgpt.model.rope import RotaryEmbedding
from scratchgpt.model.stats import kv_cache_bytes, kv_cache_bytes_per_token

HEADS, GROUPS, HD, EMB = 4, 2, 8, 32


def band(t: int, window: int) -> torch.Tensor:
    """The banded causal mask written out position by position."""
    q = torch.arange(t)[:, None]
    k = torch.arange(t)[None, :]
    return (k <= q) & (k > q - window)


def test_the_band_helper_is_the_written_out_band():
    assert torch.equal(sliding_window_allowed(10, 10, 3, torch.device("cpu")), band(10, 3))
    # The last 4 queries of 10 positions: the last 4 rows.
    assert torch.equal(sliding_window_allowed(4, 10, 3, torch.device("cpu")), band(10, 3)[-4:])


def attention(window: int | None, impl: str, seed: int = 0) -> GroupedQueryAttention:
    torch.manual_seed(seed)
    return GroupedQueryAttention(
        EMB, HEADS, GROUPS, HD, qk_norm=True, impl=impl, window=window, scale=0.3
    ).eval()


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("window", [1, 3, 7, 40])
def test_windowed_attention_equals_full_attention_with_a_banded_mask(impl, window):
    local, full = attention(window, impl), attention(None, impl)
    full.load_state_dict(local.state_dict())
    x = torch.randn(2, 20, EMB)
    cos, sin = RotaryEmbedding(HD, 10000.0)(torch.arange(20), x.dtype)
    with torch.no_grad():
        got = local(x, cos, sin)
        want = full(x, cos, sin, allowed=band(20, window)[None, None].expand(2, 1, 20, 20))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    if window < 20:  # and it is not full attention
        with torch.no_grad():
            assert (got - full(x, cos, sin)).abs().max() > 1e-3


def test_padding_and_window_combine():
    local, full = attention(4, "sdpa"), attention(None, "sdpa")
    full.load_state_dict(local.state_dict())
    x = torch.randn(2, 12, EMB)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :5] = 0
    cos, sin = RotaryEmbedding(HD, 10000.0)(torch.arange(12), x.dtype)
    allowed = causal_allowed(mask, 12, 0)
    with torch.no_grad():
        got = local(x, cos, sin, allowed=allowed)
        want = full(x, cos, sin, allowed=allowed & band(12, 4))
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunks", [[30], [1] * 30, [9, 1, 1, 5, 14], [3, 20, 7]])
def test_the_ring_cache_gives_the_logits_of_one_pass(chunks):
    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("gemma3-tiny", vocab_size=100)).eval()
    idx = torch.randint(0, 100, (2, 30))
    cache = KVCache.for_model(model, batch_size=2, max_len=30)
    with torch.no_grad():
        whole = model(idx)
        parts, start = [], 0
        for n in chunks:
            parts.append(model(idx[:, start : start + n], kv_cache=cache))
            start += n
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-5)


def test_local_layers_memory_follows_the_window_not_the_sequence():
    cfg = GPTConfig.from_preset("gemma3-tiny", vocab_size=100, context_length=4096)
    model = build_model(cfg)
    short = KVCache.for_model(model, batch_size=1, max_len=64)
    long = KVCache.for_model(model, batch_size=1, max_len=4096)
    per_position = 2 * cfg.kv_heads * cfg.head_size * 4  # keys + values, fp32
    ring = 2 * cfg.sliding_window  # the window, written twice
    # Two local layers hold their rings whatever the length; the global one holds it all.
    assert short.nbytes == per_position * (2 * ring + 64)
    assert long.nbytes == per_position * (2 * ring + 4096)
    assert kv_cache_bytes(cfg, 4096, bytes_per_value=4) == long.nbytes
    # The server's cache too: per row, local layers hold their ring (+1 scratch position).
    slots = SlotKVCache.for_model(model, slots=4, max_len=4096)
    assert slots.nbytes == 4 * per_position * (2 * (ring + 1) + 4096 + 1)
    # What `info` reports: bytes per token of the global layers, and the rings' total.
    per_token, ring_bytes = kv_cache_bytes_per_token(cfg, bytes_per_value=4)
    assert (per_token, ring_bytes) == (per_position, 2 * ring * per_position)


def test_config_checks_the_layer_types():
    base = GPTConfig.from_preset("gemma3-tiny")
    with pytest.raises(ConfigError, match="3 layers"):
        base.replace(layer_types=("sliding_attention",) * 2)
    with pytest.raises(ConfigError, match="not one of"):
        base.replace(layer_types=("local",) * 3)
    with pytest.raises(ConfigError, match="needs sliding_window"):
        base.replace(sliding_window=None)
    for preset in ("tiny", "llama3-tiny", "qwen3-tiny"):  # only Gemma 3's blocks use them
        with pytest.raises(ConfigError, match="belong to the gemma3 family"):
            GPTConfig.from_preset(preset, sliding_window=16)
    assert base.to_dict()["layer_types"] == list(base.layer_types)
    assert GPTConfig.from_dict(base.to_dict()) == base
    assert "sliding_window" not in GPTConfig.from_preset("qwen3-tiny").to_dict()


@pytest.mark.parametrize(
    ("preset", "total", "per_token", "windows"),
    [
        ("gpt2-small", 163_009_536, 12 * 2 * 768 * 2, 0),  # every head cached
        ("llama3.2-1b", 1_235_814_400, 16 * 2 * 8 * 64 * 2, 0),  # 8 key/value heads of 32
        ("qwen3-30b-a3b", 30_532_122_624, 48 * 2 * 4 * 128 * 2, 0),
        # 3 global layers grow; 15 local ones hold a ring of 2 x 512 positions each.
        ("gemma3-270m", 268_098_176, 3 * 2 * 256 * 2, 15 * 1024 * 2 * 256 * 2),
        ("gemma3-1b", 999_885_952, 4 * 2 * 256 * 2, 22 * 1024 * 2 * 256 * 2),
    ],
)
def test_info_reports_parameters_and_kv_cache_bytes_per_token(
    preset, total, per_token, windows, capsys
):
    assert main(["info", "--preset", preset, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == total
    kv = info["kv_cache_bf16"]
    assert (kv["bytes_per_token"], kv["window_bytes"]) == (per_token, windows)
    context = info["config"]["context_length"]
    assert kv["at_context_bytes"] == windows + per_token * context
