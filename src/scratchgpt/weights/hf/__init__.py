"""Hugging Face model folders: one mapping file per model family, chosen by ``model_type``.

GPT-2, Llama 3.x, Qwen3, Qwen3-MoE and Gemma 3 (text) are here. Adding a family (Gemma ...) means writing ``scratchgpt/weights/hf/<family>.py``
with an :class:`HFFamily` (config both ways, the tensor plan, the export) and adding it to
:data:`FAMILIES`; :func:`scratchgpt.weights.load_model` and ``scratchgpt info`` then read its
folders with no other change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike
from scratchgpt.weights.hf import gemma, gpt2, llama
from scratchgpt.weights.hf.base import HFFamily, hf_weight_files, load_hf, save_hf
from scratchgpt.weights.hf.gpt2 import (
    config_from_hf,
    hf_config_from_ours,
    hf_plan,
    hf_state_dict,
    load_hf_gpt2,
    save_hf_gpt2,
)
from scratchgpt.weights.native import unwrap_model

# model_type -> family: the registry.
FAMILIES: dict[str, HFFamily] = {
    family.model_type: family
    for family in (gpt2.FAMILY, llama.LLAMA, llama.QWEN3, llama.QWEN3_MOE, gemma.GEMMA3)
}


# Our config's family -> the Hugging Face family it is exported as.
EXPORT_FAMILIES: dict[str, HFFamily] = {
    "gpt2": gpt2.FAMILY,
    "llama3": llama.LLAMA,
    "qwen3": llama.QWEN3,
    "gemma3": gemma.GEMMA3,
}


def save_hf_model(
    model: Any, dir: PathLike, *, tokenizer: Any = None, overwrite: bool = False
) -> Path:
    """Write ``model`` (any family) as a Hugging Face folder that ``transformers`` loads as is:
    config.json and model.safetensors, plus the tokenizer's files when it has Hugging Face ones
    (see :func:`save_hf`)."""
    cfg = unwrap_model(model).cfg
    # Qwen3 with experts is its own Hugging Face model_type (qwen3_moe).
    family = FAMILIES["qwen3_moe"] if cfg.num_experts is not None else EXPORT_FAMILIES[cfg.family]
    return save_hf(family, model, dir, overwrite=overwrite, tokenizer=tokenizer)


def hf_family(raw: Mapping[str, Any], source: str = "config.json") -> HFFamily:
    """The family of a Hugging Face config.json (by its ``model_type``); unknown ones are
    refused with the list of those scratchgpt reads."""
    model_type = raw.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        known = ", ".join(repr(k) for k in FAMILIES)
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; scratchgpt reads Hugging Face models of "
            f"type {known} and its own checkpoints"
        )
    return family


__all__ = [
    "FAMILIES",
    "HFFamily",
    "config_from_hf",
    "hf_config_from_ours",
    "hf_family",
    "hf_plan",
    "hf_state_dict",
    "hf_weight_files",
    "load_hf",
    "load_hf_gpt2",
    "save_hf",
    "save_hf_gpt2",
    "save_hf_model",
]
