"""scratchgpt: a GPT-style LLM built from scratch in PyTorch.

The public API is importable from the top level; the heavy modules (torch) load on first use, so
``import scratchgpt`` and ``scratchgpt --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "GPTConfig": "scratchgpt.config",
    "LoRAConfig": "scratchgpt.config",
    "GPTModel": "scratchgpt.model",
    "LlamaModel": "scratchgpt.model",
    "build_model": "scratchgpt.model",
    "KVCache": "scratchgpt.model",
    "model_stats": "scratchgpt.model",
    "get_tokenizer": "scratchgpt.tokenizers",
    "load_tokenizer": "scratchgpt.tokenizers",
    "train_bpe": "scratchgpt.tokenizers",
    "create_dataloader": "scratchgpt.data",
    "generate": "scratchgpt.generation",
    "generate_text": "scratchgpt.generation",
    "stream_generate": "scratchgpt.generation",
    "pretrain": "scratchgpt.tasks",
    "finetune_classifier": "scratchgpt.tasks.classify",
    "classify": "scratchgpt.tasks.classify",
    "load_classifier": "scratchgpt.tasks.classify",
    "finetune_instruct": "scratchgpt.tasks.instruct",
    "generate_responses": "scratchgpt.tasks.instruct",
    "ChatSession": "scratchgpt.chat",
    "judge_responses": "scratchgpt.evaluation",
    "evaluate_loss": "scratchgpt.evaluation",
    "create_app": "scratchgpt.serving",
    "load_served_model": "scratchgpt.serving",
    "load_model": "scratchgpt.weights",
    "save_hf_model": "scratchgpt.weights",
    "LoadedModel": "scratchgpt.weights",
    "save_checkpoint": "scratchgpt.weights",
    "load_checkpoint": "scratchgpt.weights",
    "load_hf_gpt2": "scratchgpt.weights",
    "save_hf_gpt2": "scratchgpt.weights",
    "set_threads": "scratchgpt.threads",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scratchgpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
