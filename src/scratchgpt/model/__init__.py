"""The GPT model: attention, blocks, the model, its KV cache, and size/FLOP statistics."""

from scratchgpt.model.attention import MultiHeadAttention
from scratchgpt.model.gpt import GELU, FeedForward, GPTModel, LayerNorm, TransformerBlock
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.stats import ModelStats, model_stats

__all__ = [
    "GELU",
    "FeedForward",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "ModelStats",
    "MultiHeadAttention",
    "TransformerBlock",
    "model_stats",
]
