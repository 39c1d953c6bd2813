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


def _lora_params(cfg: GPTConfig, head_out: int) -> tuple[int, int]:
    """(LoRA parameters in the blocks, in the head): rank * (in + out) per adapted Linear."""
    if cfg.lora is None:
        return 0, 0
    e, r, targets = cfg.emb_dim, cfg.lora.rank, cfg.lora.targets
    block = 0
    if "attention" in targets:
        block += 4 * r * (e + e)  # W_query, W_key, W_value, out_proj
    if "feed_forward" in targets:
        block += 2 * r * (e + 4 * e)
    head = r * (e + head_out) if "head" in targets else 0
    return cfg.n_layers * block, head


def model_stats(cfg: GPTConfig) -> ModelStats:
    """Parameter counts and FLOPs per token for ``cfg`` (a classifier head and LoRA adapters
    included; the FLOPs count the base weights, as after merging the adapters)."""
    e, v, c, n = cfg.emb_dim, cfg.vocab_size, cfg.context_length, cfg.n_layers
    qkv = 3 * e * e + (3 * e if cfg.qkv_bias else 0)
    attn = qkv + e * e + e  # W_query/W_key/W_value, out_proj (+bias)
    ff = e * 4 * e + 4 * e + 4 * e * e + e
    norms = 2 * 2 * e
    tok, pos = v * e, c * e
    head_out = v if cfg.num_classes is None else cfg.num_classes
    lora_blocks, lora_head = _lora_params(cfg, head_out)
    block = attn + ff + norms
    head_matmul = head_out * e
    # A classifier's head has a bias; a language model's has none.
    head = head_matmul + (0 if cfg.num_classes is None else head_out) + lora_head
    body = tok + pos + n * block + lora_blocks + 2 * e  # + final norm
    total = body if cfg.tie_weights else body + head
    # FLOPs: 2 per weight of every matmul a token passes through (blocks + head), plus attention's
    # scores and weighted sum against `context_length` keys (PaLM appendix B / nanoGPT's MFU).
    matmul_weights = n * (3 * e * e + e * e + 8 * e * e) + head_matmul
    forward = 2 * matmul_weights + n * 2 * 2 * c * e
    return ModelStats(
        total_params=total,
        params_without_head=body if cfg.tie_weights else total - head,
        head_params=head,
        embedding_params=tok + pos,
        non_embedding_params=total - tok - pos - (0 if cfg.tie_weights else head),
        forward_flops_per_token=forward,
        train_flops_per_token=3 * forward,
    )
