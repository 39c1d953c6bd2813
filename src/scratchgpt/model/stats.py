"""Size, memory and FLOPs of a GPT config, computed from the config alone (no weights needed,
so `scratchgpt info --preset gpt2-xl` is instant)."""

from __future__ import annotations

from dataclasses import dataclass

from scratchgpt.config import GPTConfig
from scratchgpt.model.kv_cache import ring_sizes


@dataclass(frozen=True)
class ModelStats:
    total_params: int  # unique parameters (a tied head counts once)
    params_without_head: int  # total minus the output head (the book's "124M" for gpt2-small)
    head_params: int
    embedding_params: int  # token + position tables
    non_embedding_params: int  # what does the per-token compute
    forward_flops_per_token: int  # at full context, matmuls only (2 FLOPs per multiply-add)
    train_flops_per_token: int  # forward + backward ~= 3x forward
    # Parameters one token computes with: the total minus the experts it is not routed to (a
    # mixture of experts); the total for a dense model.
    active_params: int = 0

    def memory_bytes(self, bytes_per_param: int) -> int:
        return self.total_params * bytes_per_param

    def memory_mb(self, bytes_per_param: int = 4) -> float:
        """Weights only, in MiB (the book's "621.83 MB" for gpt2-small at fp32)."""
        return self.memory_bytes(bytes_per_param) / 1024**2


def _block_linears(
    cfg: GPTConfig, layer: int = 0, experts: int | None = None
) -> dict[str, list[tuple[str, int, int]]]:
    """(projection, in, out) of each Linear in block ``layer``, by LoRA target group. A mixture
    of experts lists its router ("router", in no LoRA group) and the SwiGLU of ``experts``
    experts (all of them when None; the k a token uses for the active count)."""
    e, f = cfg.emb_dim, cfg.ff_dim
    q, kv = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    attention = [("q", e, q), ("k", e, kv), ("v", e, kv), ("o", q, e)]
    if cfg.family == "gpt2":
        return {"attention": attention, "feed_forward": [("up", e, f), ("down", f, e)]}
    if cfg.is_moe_layer(layer):
        assert cfg.num_experts is not None and cfg.moe_intermediate_size is not None
        m = cfg.moe_intermediate_size
        expert = [("gate", e, m), ("up", e, m), ("down", m, e)]
        n = cfg.num_experts if experts is None else experts
        return {"attention": attention, "feed_forward": expert * n,
                "router": [("router", e, cfg.num_experts)]}  # fmt: skip
    return {"attention": attention, "feed_forward": [("gate", e, f), ("up", e, f), ("down", f, e)]}


def _lora_params(cfg: GPTConfig, head_out: int) -> tuple[int, int]:
    """(LoRA parameters in the blocks, in the head): rank * (in + out) per adapted Linear."""
    if cfg.lora is None:
        return 0, 0
    r, targets = cfg.lora.rank, cfg.lora.targets
    blocks = sum(
        r * (i + o) for layer in range(cfg.n_layers)
        for group, shapes in _block_linears(cfg, layer).items()
        for proj, i, o in shapes if group in targets or proj in targets
    )  # fmt: skip
    head = r * (cfg.emb_dim + head_out) if "head" in targets else 0
    return blocks, head


def _block_params(cfg: GPTConfig, layer: int = 0, experts: int | None = None) -> int:
    """Parameters of transformer block ``layer`` (with ``experts`` experts of a MoE layer)."""
    e = cfg.emb_dim
    linears = _block_linears(cfg, layer, experts)
    weights = sum(i * o for shapes in linears.values() for _, i, o in shapes)
    if cfg.family == "gpt2":
        q = cfg.n_heads * cfg.head_size
        biases = (3 * q if cfg.qkv_bias else 0) + e + cfg.ff_dim + e  # qkv, out_proj, MLP
        return weights + biases + 2 * 2 * e  # two LayerNorms (scale + shift)
    qkv_bias = (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_size if cfg.qkv_bias else 0
    qk_norm = 2 * cfg.head_size if cfg.qk_norm else 0
    norms = 4 if cfg.family == "gemma3" else 2  # Gemma 3 also normalises each branch's output
    return weights + qkv_bias + qk_norm + norms * e  # RMSNorms (scale only)


def model_stats(cfg: GPTConfig) -> ModelStats:
    """Parameter counts and FLOPs per token for ``cfg`` (a classifier head and LoRA adapters
    included; the FLOPs count the base weights, as after merging the adapters)."""
    e, v, c, n = cfg.emb_dim, cfg.vocab_size, cfg.context_length, cfg.n_layers
    gpt2 = cfg.family == "gpt2"
    tok, pos = v * e, (c * e if gpt2 else 0)  # RoPE models have no position table
    head_out = v if cfg.num_classes is None else cfg.num_classes
    lora_blocks, lora_head = _lora_params(cfg, head_out)
    head_matmul = head_out * e
    # A classifier's head has a bias; a language model's has none.
    head = head_matmul + (0 if cfg.num_classes is None else head_out) + lora_head
    final_norm = 2 * e if gpt2 else e
    body = tok + pos + sum(_block_params(cfg, i) for i in range(n)) + lora_blocks + final_norm
    total = body if cfg.tie_weights else body + head
    # A token passes through k of a MoE layer's experts (and the whole router); the unused
    # experts' parameters are the difference between total and active.
    k = cfg.num_experts_per_tok
    idle = sum(_block_params(cfg, i) - _block_params(cfg, i, k) for i in range(n))
    # FLOPs: 2 per weight of every matmul a token passes through (blocks + head), plus attention's
    # scores and weighted sum against `context_length` keys, or a local layer's window (PaLM
    # appendix B / nanoGPT's MFU).
    block_matmul = sum(
        i * o for layer in range(n)
        for shapes in _block_linears(cfg, layer, k).values() for _, i, o in shapes
    )  # fmt: skip
    matmul_weights = block_matmul + head_matmul
    keys_seen = sum(min(c, cfg.window(layer) or c) for layer in range(n))
    forward = 2 * matmul_weights + 2 * 2 * keys_seen * cfg.n_heads * cfg.head_size
    return ModelStats(
        total_params=total,
        params_without_head=body if cfg.tie_weights else total - head,
        head_params=head,
        embedding_params=tok + pos,
        non_embedding_params=total - tok - pos - (0 if cfg.tie_weights else head),
        forward_flops_per_token=forward,
        train_flops_per_token=3 * forward,
        active_params=total - idle,
    )


def kv_cache_bytes(cfg: GPTConfig, tokens: int, bytes_per_value: int = 2) -> int:
    """Bytes a :class:`~scratchgpt.model.KVCache` holds for one sequence of ``tokens`` tokens: a
    key and a value of ``kv_heads * head_size`` values per layer and position (grouped-query
    attention stores only the key/value heads); a local layer whose window is shorter than the
    sequence holds its ring, ``2 * window`` positions (written twice, so that the window is
    always one ordered slice)."""
    per_position = 2 * cfg.kv_heads * cfg.head_size * bytes_per_value
    rings = ring_sizes([cfg.window(layer) for layer in range(cfg.n_layers)], tokens)
    return per_position * sum(tokens if ring is None else 2 * ring for ring in rings)


def kv_cache_bytes_per_token(cfg: GPTConfig, bytes_per_value: int = 2) -> tuple[int, int]:
    """(bytes each further token adds, bytes the local layers' rings hold): the KV cache of a
    sequence longer than the windows is ``ring bytes + tokens * per token``."""
    per_position = 2 * cfg.kv_heads * cfg.head_size * bytes_per_value
    windows = [cfg.window(layer) for layer in range(cfg.n_layers)]
    per_token = per_position * sum(1 for w in windows if w is None)
    return per_token, per_position * sum(2 * w for w in windows if w is not None)
