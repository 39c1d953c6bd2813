"""The models: attention, blocks, GPT-2, Llama 3.x / Qwen3 (dense or mixture of experts) and Gemma 3,
the KV cache, and size/FLOP statistics. ``build_model(cfg)`` builds the family a config names."""

from scratchgpt.model.attention import GroupedQueryAttention, MultiHeadAttention
from scratchgpt.model.build import MODEL_CLASSES, MODEL_TYPES, build_model
from scratchgpt.model.feed_forward import GeGLUFeedForward, SwiGLUFeedForward
from scratchgpt.model.gemma import Gemma3Model, GemmaBlock
from scratchgpt.model.gpt import GELU, FeedForward, GPTModel, LayerNorm, TransformerBlock
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.llama import LlamaBlock, LlamaModel
from scratchgpt.model.moe import MoEFeedForward
from scratchgpt.model.norms import RMSNorm
from scratchgpt.model.rope import RotaryEmbedding, apply_rope, rope_inv_freq
from scratchgpt.model.stats import (
    ModelStats,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    model_stats,
)

__all__ = [
    "GELU",
    "MODEL_CLASSES",
    "MODEL_TYPES",
    "FeedForward",
    "GPTModel",
    "GeGLUFeedForward",
    "Gemma3Model",
    "GemmaBlock",
    "GroupedQueryAttention",
    "KVCache",
    "LayerNorm",
    "LlamaBlock",
    "LlamaModel",
    "MoEFeedForward",
    "ModelStats",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLUFeedForward",
    "TransformerBlock",
    "apply_rope",
    "build_model",
    "kv_cache_bytes",
    "kv_cache_bytes_per_token",
    "model_stats",
    "rope_inv_freq",
]
