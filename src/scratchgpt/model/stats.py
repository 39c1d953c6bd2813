"""Size, memory and FLOPs of a GPT config, computed from the config alone (no weights needed,
so `scratchgpt info --preset gpt2-xl` is instant)."""

from __future__ import annotations

from dataclasses import dataclass

from scratchgpt.config import GPTConfig


@dataclass(frozen=True)
class ModelStats:
    total_params: int  # unique parameters (a tied head counts once)
    params_without_head: int  # total minus the output head (the book's "124M" for gpt2-small)
    head_params: int
    embedding_params: int  # token + position tables
    non_embedding_params: int  # what does the per-token compute
    forward_flops_per_token: int  # at full context, matmuls only (2 FLOPs per multiply-add)
    train_flops_per_token: int  # forward + backward ~= 3x forward

    def memory_bytes(self, bytes_per_param: int) -> int:
        return self.total_params * bytes_per_param

    def memory_mb(self, bytes_per_param: int = 4) -> float:
        """Weights only, in MiB (the book's "621.83 MB" for gpt2-small at fp32)."""
        return self.memory_bytes(bytes_per_param) / 1024**2


def _block_linears(cfg: GPTConfig) -> dict[str, list[tuple[str, int, int]]]:
    """(projection, in, out) of each Linear in one block, by LoRA target group."""
    e, f = cfg.emb_dim, cfg.ff_dim
    q, kv = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    attention = [("q", e, q), ("k", e, kv), ("v", e, kv), ("o", q, e)]
    if cfg.family == "gpt2":
        return {"attention": attention, "feed_forward": [("up", e, f), ("down", f, e)]}
    return {"attention": attention, "feed_forward": [("gate", e, f), ("up", e, f), ("down", f, e)]}


def _lora_params(cfg: GPTConfig, head_out: int) -> tuple[int, int]:
    """(LoRA parameters in the blocks, in the head): rank * (in + out) per adapted Linear."""
    if cfg.lora is None:
        return 0, 0
    r, targets = cfg.lora.rank, cfg.lora.targets
    block = sum(
        r * (i + o) for group, shapes in _block_linears(cfg).items()
        for proj, i, o in shapes if group in targets or proj in targets
    )  # fmt: skip
    head = r * (cfg.emb_dim + head_out) if "head" in targets else 0
    return cfg.n_layers * block, head


def _block_params(cfg: GPTConfig) -> int:
    """Parameters of one transformer block."""
    e = cfg.emb_dim
    weights = sum(i * o for shapes in _block_linears(cfg).values() for _, i, o in shapes)
    if cfg.family == "gpt2":
        q = cfg.n_heads * cfg.head_size
        biases = (3 * q if cfg.qkv_bias else 0) + e + cfg.ff_dim + e  # qkv, out_proj, MLP
        return weights + biases + 2 * 2 * e  # two LayerNorms (scale + shift)
    qkv_bias = (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_size if cfg.qkv_bias else 0
    qk_norm = 2 * cfg.head_size if cfg.qk_norm else 0
    return weights + qkv_bias + qk_norm + 2 * e  # two RMSNorms (scale only)


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
    body = tok + pos + n * _block_params(cfg) + lora_blocks + final_norm
    total = body if cfg.tie_weights else body + head
    # FLOPs: 2 per weight of every matmul a token passes through (blocks + head), plus attention's
    # scores and weighted sum against `context_length` keys (PaLM appendix B / nanoGPT's MFU).
    block_matmul = sum(i * o for shapes in _block_linears(cfg).values() for _, i, o in shapes)
    matmul_weights = n * block_matmul + head_matmul
    forward = 2 * matmul_weights + n * 2 * 2 * c * cfg.n_heads * cfg.head_size
    return ModelStats(
        total_params=total,
        params_without_head=body if cfg.tie_weights else total - head,
        head_params=head,
        embedding_params=tok + pos,
        non_embedding_params=total - tok - pos - (0 if cfg.tie_weights else head),
        forward_flops_per_token=forward,
        train_flops_per_token=3 * forward,
    )
