"""Loading base and instruction-tuned models (LoRA adapters merged), and their prompt style."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, PAD_TOKEN_ID, get_prompt_style
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, read_json
from scratchgpt.tasks.instruct.config import InstructOptions

GPT2_VOCAB_SIZE = 50257


def load_base_model(checkpoint: str | None = None, gpt2: str | None = None) -> Any:
    """``LoadedModel`` of a checkpoint folder or a cached GPT-2 name, with a tokenizer."""
    from scratchgpt.checkpoints import load_checkpoint

    loaded = load_checkpoint(checkpoint if checkpoint is not None else str(gpt2))
    if loaded.tokenizer is None:
        if loaded.config.vocab_size != GPT2_VOCAB_SIZE:
            raise CheckpointError(
                f"{loaded.path}: no tokenizer.json and a vocabulary of "
                f"{loaded.config.vocab_size} ids (not GPT-2's); save the checkpoint with its tokenizer"
            )
        from scratchgpt.tokenizers import get_tokenizer

        loaded.tokenizer = get_tokenizer("gpt2")
    return loaded


def checkpoint_style(metadata: Mapping[str, Any], override: str | None = None) -> str:
    """The prompt style to use with a checkpoint: ``override``, else its metadata's, else alpaca."""
    name = override or metadata.get("prompt_style") or DEFAULT_STYLE
    return get_prompt_style(name).name


def pad_id_for(tokenizer: Any) -> int:
    """The padding id: the tokenizer's end-of-text token (GPT-2: 50256)."""
    eot = getattr(tokenizer, "eot_id", None)
    return int(eot) if eot is not None else PAD_TOKEN_ID


def _apply_lora(model: nn.Module, cfg: InstructOptions) -> dict[str, Any] | None:
    """Freeze the model and add LoRA adapters (appendix E) when ``lora_rank`` > 0; the adapter
    settings that go into the checkpoint metadata."""
    if cfg.lora_rank <= 0:
        return None
    from scratchgpt.model.lora import apply_lora

    # A tied head is the embedding table: adapting it would store one tensor under two names.
    targets = ["attention", "feed_forward"]
    if not getattr(getattr(model, "cfg", None), "tie_weights", False):
        targets.append("head")
    apply_lora(model, cfg.lora_rank, cfg.lora_alpha, targets, freeze=True)
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": targets}


def load_instruct_model(path: PathLike) -> Any:
    """``LoadedModel`` of any checkpoint (or run folder, or cached GPT-2 name); a checkpoint
    saved with LoRA adapters gets them merged into its weights."""
    from scratchgpt.checkpoints import (
        CHECKPOINTS_DIR,
        CONFIG_FILE,
        TOKENIZER_FILE,
        WEIGHTS_FILE,
        LoadedModel,
        read_manifest,
        resolve_checkpoint,
    )

    p = Path(path)
    if p.is_dir() and not (p / CONFIG_FILE).is_file() and (p / CHECKPOINTS_DIR).is_dir():
        p = resolve_checkpoint(p)
    meta = read_manifest(p).get("metadata", {}) if (p / CONFIG_FILE).is_file() else {}
    lora = meta.get("lora") if isinstance(meta, dict) else None
    if not lora:
        return load_base_model(str(path))
    from safetensors.torch import load_file

    from scratchgpt.config import GPTConfig
    from scratchgpt.model import GPTModel
    from scratchgpt.model.lora import apply_lora, merge_lora
    from scratchgpt.tokenizers import load_tokenizer
    from scratchgpt.training.state import load_weights_into

    cfg = GPTConfig.from_dict(read_json(p / CONFIG_FILE), source=str(p / CONFIG_FILE))
    model = GPTModel(cfg)
    apply_lora(model, int(lora["rank"]), float(lora["alpha"]), lora["targets"], freeze=True)
    try:
        weights = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p / WEIGHTS_FILE}: corrupt or missing ({e})") from None
    load_weights_into(model, weights, p / WEIGHTS_FILE)
    merge_lora(model)
    for param in model.parameters():
        param.requires_grad_(True)
    tok_path = p / TOKENIZER_FILE
    tokenizer = load_tokenizer(tok_path) if tok_path.is_file() else None
    loaded = LoadedModel(model.eval(), tokenizer, cfg, p, dict(meta), "scratchgpt")
    if tokenizer is None:
        from scratchgpt.tokenizers import get_tokenizer

        loaded.tokenizer = get_tokenizer("gpt2")
    return loaded
