"""Loading base and instruction-tuned models (LoRA adapters merged), and their prompt style."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from scratchgpt.data.chat_style import CHAT_STYLE
from scratchgpt.data.instructions import DEFAULT_STYLE, PAD_TOKEN_ID, get_prompt_style
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike
from scratchgpt.model.surgery import set_dropout, untie_head
from scratchgpt.tasks.instruct.config import AUTO_STYLE, InstructConfig, InstructOptions
from scratchgpt.tokenizers.chat import family_template
from scratchgpt.weights import (
    LoadedModel,
    load_model,
    require_language_model,
    with_default_tokenizer,
)

GPT2_VOCAB_SIZE = 50257


def load_base_model(
    checkpoint: str | None = None,
    gpt2: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """``LoadedModel`` of a language model (any checkpoint, run folder, Hugging Face folder or
    cached GPT-2 name; LoRA adapters merged), with a tokenizer; ``dtype`` casts its float
    weights (None: as stored); ``quantize="int8"`` for inference with int8 linear layers."""
    name = checkpoint if checkpoint is not None else str(gpt2)
    loaded = load_model(name, dtype=dtype, quantize=quantize)
    return with_default_tokenizer(require_language_model(loaded))


def checkpoint_style(
    metadata: Mapping[str, Any], override: str | None = None, tokenizer: Any = None
) -> str:
    """The prompt style to use with a checkpoint: ``override``, else its metadata's, else the
    model's own chat template when its tokenizer has one (a Llama 3 / Qwen3 / Gemma 3 folder),
    else alpaca."""
    name = override or metadata.get("prompt_style") or default_style(tokenizer)
    return get_prompt_style(name, tokenizer).name


# The bundled chat template a model family falls back on when its folder has none (a base model,
# or a model pretrained here with the family's tokenizer), and the control tokens it needs.
FAMILY_CHAT_TEMPLATES = {
    "llama3": ("llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "qwen3": ("chatml", ("<|im_start|>", "<|im_end|>")),
    "gemma3": ("gemma", ("<start_of_turn>", "<end_of_turn>")),
}


def resolve_prompt_style(name: str, tokenizer: Any, family: str) -> str:
    """The prompt style a fine-tuning run uses: ``auto`` is ``chat`` for a Llama 3 / Qwen3 /
    Gemma 3 model with a tokenizer of its own (tokenizer.json), else ``alpaca``. For ``chat``, a
    tokenizer without a chat template is given its family's (Llama 3's header format, Qwen's
    ChatML, Gemma's turns), which the checkpoint then keeps."""
    own = getattr(tokenizer, "name", None) == "hf"
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if name == AUTO_STYLE:
        name = (
            CHAT_STYLE
            if has_template or (own and family in FAMILY_CHAT_TEMPLATES)
            else DEFAULT_STYLE
        )
    if name == CHAT_STYLE and not has_template and own and family in FAMILY_CHAT_TEMPLATES:
        template, tokens = FAMILY_CHAT_TEMPLATES[family]
        missing = [t for t in tokens if t not in tokenizer.special_tokens]
        if missing:
            raise ConfigError(
                f"prompt style 'chat': the tokenizer has no chat template, and {family}'s "
                f"format needs the special tokens {missing}, which it lacks; choose "
                f"prompt_style alpaca or give the tokenizer a chat template"
            )
        tokenizer.chat_template = family_template(template)
    return get_prompt_style(name, tokenizer).name


def default_style(tokenizer: Any) -> str:
    """``chat`` for a tokenizer with a chat template, else the book's alpaca."""
    return CHAT_STYLE if getattr(tokenizer, "chat_template", None) else DEFAULT_STYLE


def pad_id_for(tokenizer: Any) -> int:
    """The padding id: the tokenizer's end-of-text token (GPT-2: 50256)."""
    eot = getattr(tokenizer, "eot_id", None)
    return int(eot) if eot is not None else PAD_TOKEN_ID


def _apply_lora(model: nn.Module, cfg: InstructOptions | Any, seed: int) -> dict[str, Any] | None:
    """Freeze the model and add LoRA adapters (appendix E) when ``lora_rank`` > 0 (the model's
    config records them); the adapter settings that go into the checkpoint metadata. The A
    matrices are drawn from ``seed`` (the run's), with the global RNG left as it was: a run's
    adapters are the same in one process and in every torchrun rank, whatever drew random
    numbers before."""
    if cfg.lora_rank <= 0:
        return None
    import torch

    from scratchgpt.model.lora import apply_lora

    # A tied head is the embedding table: adapting it would store one tensor under two names.
    targets = ["attention", "feed_forward"]
    if not getattr(getattr(model, "cfg", None), "tie_weights", False):
        targets.append("head")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha, targets, freeze=True)
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": targets}


def prepare_for_training(
    model: nn.Module, cfg: InstructConfig | Any, options: InstructOptions | Any = None
) -> dict[str, Any]:
    """Make a loaded model ready for fine-tuning as the book's chapter 7 does: its dropout rate
    set to ``model.drop_rate`` (GPT-2's config says 0.1, the book trains with 0.0), a tied head
    untied for full fine-tuning (``model.untie_head``: the book's ``load_weights_into_gpt``
    gives the head its own copy of the token embeddings, so the two train separately), LoRA
    adapters when ``lora_rank`` > 0. ``options`` holds ``lora_rank`` and ``lora_alpha``
    (default: ``cfg.instruct``; preference tuning passes its own section). Returns
    ``{"untied": bool, "lora": settings or None}``."""
    opts = cfg.instruct if options is None else options
    if cfg.model.drop_rate is not None:
        set_dropout(model, cfg.model.drop_rate)
    untied = opts.lora_rank == 0 and cfg.model.untie_head and untie_head(model)
    return {"untied": untied, "lora": _apply_lora(model, opts, cfg.train.seed)}


def load_instruct_model(
    path: PathLike, *, dtype: torch.dtype | None = None, quantize: str | None = None
) -> LoadedModel:
    """``LoadedModel`` of any language model (checkpoint, run folder, Hugging Face folder or
    cached GPT-2 name), with a tokenizer; LoRA adapters are merged into its weights. The same
    as :func:`load_base_model` (kept for its name)."""
    return load_base_model(str(path), dtype=dtype, quantize=quantize)
