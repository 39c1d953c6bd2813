"""The named model configs (``GPTConfig.from_preset``): GPT-2's sizes, small models for CPU work
and tests, and Llama 3.x, Qwen3, Qwen3-MoE and Gemma 3 with their published shapes (the models'
config.json on the Hugging Face hub), so ``scratchgpt info --preset`` reproduces their parameter
counts. Plain dicts of GPTConfig fields; the config validates them when it is built."""

from __future__ import annotations

from typing import Any

# The four GPT-2 sizes use the book's settings (qkv_bias False, untied head, dropout 0.1), so
# `info --preset gpt2-small` reproduces the book's parameter counts. Loading OpenAI's weights sets
# qkv_bias=True and tie_weights=True, as the released models have.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": dict(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": dict(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": dict(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
    # Small models for CPU work: "mini" pretrains on The Verdict in minutes on a laptop.
    "mini": dict(
        context_length=256, emb_dim=256, n_layers=4, n_heads=4, tie_weights=True, init="gpt2"
    ),
    # Tests: a few hundred thousand non-embedding parameters.
    "tiny": dict(context_length=64, emb_dim=32, n_layers=2, n_heads=4, drop_rate=0.0),
}

# Llama 3.x and Qwen3 with the published shapes (the models' config.json on the Hugging Face
# hub); `info --preset` reproduces their parameter counts. No dropout, as released.
_LLAMA3 = dict(
    family="llama3", vocab_size=128256, context_length=131072, n_kv_groups=8,
    rope_base=500000.0, ln_eps=1e-5, drop_rate=0.0, init="gpt2",
)  # fmt: skip
_LLAMA3_ROPE = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_context_length=8192)  # fmt: skip
_LLAMA3_ROPE_8B = dict(_LLAMA3_ROPE, factor=8.0)
_QWEN3 = dict(
    family="qwen3", vocab_size=151936, context_length=40960, n_kv_groups=8, head_dim=128,
    rope_base=1000000.0, qk_norm=True, ln_eps=1e-6, drop_rate=0.0, init="gpt2",
)  # fmt: skip


# Gemma 3: local layers see the last 512 tokens (RoPE theta 10k), every sixth layer is global
# (theta 1M); one key/value head of width 256, scores scaled by 1/sqrt(256).
_GEMMA3 = dict(
    family="gemma3", vocab_size=262144, context_length=32768, n_kv_groups=1, head_dim=256,
    rope_base=1000000.0, rope_local_base=10000.0, sliding_window=512, query_pre_attn_scalar=256,
    qk_norm=True, ln_eps=1e-6, drop_rate=0.0, init="gpt2", tie_weights=True,
)  # fmt: skip


def gemma3_layer_types(n_layers: int, every: int = 6) -> list[str]:
    """Gemma 3's pattern: ``every - 1`` local (sliding-window) layers, then one global."""
    return [
        "full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n_layers)
    ]


def repeat_layer_pattern(layer_types: list[str], n_layers: int) -> list[str]:
    """``layer_types`` for ``n_layers`` layers, repeating the pattern of the given ones (up to
    and including their first global layer), e.g. a preset's with a different depth."""
    full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    period = full[0] + 1 if full else len(layer_types)
    return [layer_types[i % period] for i in range(n_layers)]


def _sized(base: dict[str, Any], emb: int, heads: int, layers: int, hidden: int, **kw: Any):
    return dict(base, emb_dim=emb, n_heads=heads, n_layers=layers, hidden_dim=hidden, **kw)


_TIED = dict(tie_weights=True)
PRESETS.update(
    {
        "llama3.2-1b": _sized(_LLAMA3, 2048, 32, 16, 8192, **_TIED, rope_scaling=_LLAMA3_ROPE),
        "llama3.2-3b": _sized(_LLAMA3, 3072, 24, 28, 8192, **_TIED, rope_scaling=_LLAMA3_ROPE),
        "llama3.1-8b": _sized(_LLAMA3, 4096, 32, 32, 14336, rope_scaling=_LLAMA3_ROPE_8B),
        "qwen3-0.6b": _sized(_QWEN3, 1024, 16, 28, 3072, **_TIED),  # 596M, 0.44B w/o embeddings
        "qwen3-1.7b": _sized(_QWEN3, 2048, 16, 28, 6144, **_TIED),
        "qwen3-4b": _sized(_QWEN3, 2560, 32, 36, 9728, **_TIED),
        "qwen3-8b": _sized(_QWEN3, 4096, 32, 36, 12288),
        # Small Llama/Qwen3-shaped models for CPU pretraining and tests (GPT-2's vocabulary by
        # default; the tokenizer decides).
        "llama3-mini": _sized(
            dict(family="llama3", context_length=256, init="gpt2", drop_rate=0.0), 256, 4, 4, 688,
            n_kv_groups=2, **_TIED,
        ),
        "llama3-tiny": _sized(
            dict(family="llama3", context_length=64, drop_rate=0.0), 32, 4, 2, 64, n_kv_groups=2,
            rope_scaling=dict(factor=8.0, original_context_length=16),
        ),
        "qwen3-tiny": _sized(
            dict(family="qwen3", context_length=64, drop_rate=0.0, ln_eps=1e-6), 32, 4, 2, 64,
            n_kv_groups=2, head_dim=16, qk_norm=True, **_TIED,
        ),
        # Qwen3-MoE: 128 experts of width 768 in each of 48 layers, 8 per token (30.5B
        # parameters, 3.3B active per token).
        "qwen3-30b-a3b": _sized(
            _QWEN3, 2048, 32, 48, 6144, n_kv_groups=4, num_experts=128, num_experts_per_tok=8,
            moe_intermediate_size=768, norm_topk_prob=True,
        ),
        # Gemma 3 (text): 268,098,176 and 999,885,952 parameters.
        "gemma3-270m": _sized(_GEMMA3, 640, 4, 18, 2048, layer_types=gemma3_layer_types(18)),
        "gemma3-1b": _sized(_GEMMA3, 1152, 4, 26, 6912, layer_types=gemma3_layer_types(26)),
        # Tests: two local layers with a window of 8, then a global one.
        "gemma3-tiny": _sized(
            dict(_GEMMA3, vocab_size=50257, context_length=64), 32, 4, 3, 64,
            n_kv_groups=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
            layer_types=gemma3_layer_types(3, every=3),
        ),
        "qwen3-moe-tiny": _sized(
            dict(family="qwen3", context_length=64, drop_rate=0.0, ln_eps=1e-6), 32, 4, 2, 64,
            n_kv_groups=2, head_dim=16, qk_norm=True, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=16, **_TIED,
        ),
    }
)  # fmt: skip
