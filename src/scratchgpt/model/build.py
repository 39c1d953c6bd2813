"""One constructor for every family: ``build_model(cfg)`` picks the model class by
``cfg.family``."""

from __future__ import annotations

from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.model.base import DecoderModel
from scratchgpt.model.gemma import Gemma3Model
from scratchgpt.model.gpt import GPTModel
from scratchgpt.model.llama import LlamaModel
from scratchgpt.model.quantize import quantize_model

# family -> model class. Qwen3 is Llama with QK-norm (set by its config), not another class.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "gpt2": GPTModel,
    "llama3": LlamaModel,
    "qwen3": LlamaModel,
    "gemma3": Gemma3Model,
}
# Every model class derives from DecoderModel: isinstance checks use it.
MODEL_TYPES: tuple[type[nn.Module], ...] = (DecoderModel,)


def build_model(cfg: GPTConfig) -> nn.Module:
    """The model ``cfg`` describes (GPTModel for GPT-2, LlamaModel for Llama 3.x and Qwen3, Gemma3Model for Gemma 3),
    with fresh weights initialised as ``cfg.init`` says; with ``cfg.quantization`` its linear
    layers are int8 ones (quantized from those weights)."""
    if cfg.quantization is None:
        return MODEL_CLASSES[cfg.family](cfg)
    model = MODEL_CLASSES[cfg.family](cfg.replace(quantization=None))
    return quantize_model(model, cfg.quantization)
