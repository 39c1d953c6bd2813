"""Building and loading classifiers: the new head, the starting model, checkpoint folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.fileio import PathLike
from scratchgpt.tasks.classify.config import TASK_NAME, TRAINABLE_CHOICES, ClassifyModel
from scratchgpt.weights import (
    LoadedModel,
    inspect_model,
    load_model,
    require_language_model,
    resolve_model_path,
)


def make_classifier(
    model: nn.Module,
    num_classes: int,
    *,
    trainable: str = "last-blocks",
    train_blocks: int = 1,
    lora_rank: int = 16,
    lora_alpha: float = 16.0,
    lora_targets: Sequence[str] = ("attention", "feed_forward", "head"),
) -> nn.Module:
    """Turn a GPTModel into a classifier, in place: a new ``Linear(emb_dim, num_classes)`` head
    and the chosen trainable parameters.

    trainable: ``last-blocks`` (the book: the last ``train_blocks`` transformer blocks, the final
    LayerNorm and the head), ``all``, ``head`` (the head alone) or ``lora`` (everything frozen,
    LoRA adapters on ``lora_targets``; with ``head`` among them the new head is frozen and adapted
    too, as in appendix E, otherwise the head is trained fully).
    """
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if trainable not in TRAINABLE_CHOICES:
        raise ConfigError(f"trainable must be one of {list(TRAINABLE_CHOICES)}, got {trainable!r}")
    cfg = model.cfg
    n_layers = len(model.trf_blocks)
    if trainable == "last-blocks" and not 0 <= train_blocks <= n_layers:
        raise ConfigError(
            f"train_blocks must be in 0..{n_layers} (the model's blocks), got {train_blocks}"
        )
    dev = model.tok_emb.weight.device
    model.out_head = nn.Linear(cfg.emb_dim, num_classes, device=dev)
    # The config describes the new architecture (so GPTModel(cfg) rebuilds it from a checkpoint):
    # a head of num_classes outputs, no longer the embedding matrix. apply_lora adds its part.
    model.cfg = cfg.replace(tie_weights=False, num_classes=num_classes)
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
    if trainable == "last-blocks":
        for block in list(model.trf_blocks)[n_layers - train_blocks :]:
            block.requires_grad_(True)
        model.final_norm.requires_grad_(True)
        model.out_head.requires_grad_(True)
    elif trainable == "head":
        model.out_head.requires_grad_(True)
    elif trainable == "lora":
        from scratchgpt.model.lora import apply_lora

        apply_lora(model, lora_rank, lora_alpha, lora_targets, freeze=True)
        if "head" not in lora_targets:
            # A new head has nothing to adapt from: without LoRA on it, it is trained fully.
            model.out_head.requires_grad_(True)
    return model


@dataclass
class Classifier:
    """A loaded classifier: the model (eval mode), its tokenizer and how it reads texts."""

    model: nn.Module
    tokenizer: Any
    label_names: list[str]
    max_length: int
    pad_token_id: int
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def classifier_metadata(
    label_names: Sequence[str],
    max_length: int,
    pad_token_id: int,
    *,
    trainable: str,
    lora: dict[str, Any] | None = None,
    base: str = "",
) -> dict[str, Any]:
    """The checkpoint metadata that lets :func:`load_classifier` rebuild a classifier."""
    return {
        "task": TASK_NAME,
        "num_classes": len(label_names),
        "label_names": list(label_names),
        "max_length": int(max_length),
        "pad_token_id": int(pad_token_id),
        "trainable": trainable,
        "lora": lora,
        "base_model": base,
    }


def load_classifier(
    path: PathLike | LoadedModel,
    *,
    device: torch.device | str | None = None,
    merge: bool = True,
) -> Classifier:
    """A classifier from a checkpoint folder or a run folder (its newest checkpoint) written by
    fine-tuning, or from a model :func:`scratchgpt.load_model` already loaded; LoRA adapters are
    merged into the weights unless ``merge`` is False. A path loads onto ``device`` (default
    CPU); a loaded model stays where it is unless ``device`` is given."""
    if isinstance(path, LoadedModel):
        loaded = path
    else:
        p = Path(path)
        if not p.exists():
            raise CheckpointError(f"{p}: no such checkpoint folder")
        files = inspect_model(p)  # config and metadata only: refuse before reading weights
        if files.config.num_classes is None:
            what = (
                "a Hugging Face GPT-2 model"
                if files.format != "scratchgpt"
                else f"a {files.metadata.get('task') or 'language-model'} checkpoint"
            )
            raise CheckpointError(
                f"{files.path}: not a classifier ({what}, whose head predicts tokens); fine-tune "
                f"it first: scratchgpt finetune-classifier --checkpoint {p} --data spam --out RUN"
            )
        loaded = load_model(p, device=device or "cpu", merge_lora=merge)
    meta = loaded.metadata
    if loaded.config.num_classes is None:
        raise CheckpointError(f"{loaded.path}: not a classifier (its head predicts tokens)")
    for key in ("label_names", "max_length", "pad_token_id"):
        if key not in meta:
            raise CheckpointError(
                f"{loaded.path}: classifier metadata lacks {key!r} (scratchgpt.json)"
            )
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        from scratchgpt.tokenizers import get_tokenizer

        tokenizer = get_tokenizer("gpt2")
    model = loaded.model if device is None else loaded.model.to(device)
    model.requires_grad_(False)
    return Classifier(
        model.eval(), tokenizer, [str(x) for x in meta["label_names"]], int(meta["max_length"]),
        int(meta["pad_token_id"]), loaded.path, dict(meta),
    )  # fmt: skip


def load_base_model(cfg: ClassifyModel) -> tuple[nn.Module, Any, str]:
    """(GPTModel, tokenizer, description) of the starting model."""
    from scratchgpt.tokenizers import get_tokenizer

    if cfg.random_init:
        from scratchgpt.config import GPTConfig
        from scratchgpt.model import build_model

        tokenizer = get_tokenizer("gpt2")
        mcfg = GPTConfig.from_preset(cfg.random_init, vocab_size=tokenizer.vocab_size)
        return build_model(mcfg), tokenizer, f"random {cfg.random_init}"
    if cfg.gpt2:
        loaded = require_language_model(load_model(resolve_model_path(cfg.gpt2)))
        return loaded.model, loaded.tokenizer, f"GPT-2 {cfg.gpt2}"
    path = Path(str(cfg.checkpoint))
    if not path.exists():
        raise CheckpointError(f"--checkpoint {path}: no such folder")
    loaded = load_model(path)
    if loaded.config.num_classes is not None:
        raise CheckpointError(
            f"{loaded.path} is already a classifier; to continue its run use --resume with its "
            "--out folder"
        )
    tokenizer = loaded.tokenizer or get_tokenizer("gpt2")
    return loaded.model, tokenizer, f"checkpoint {loaded.path}"
