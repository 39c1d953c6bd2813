"""Building and loading classifiers: the new head, the starting model, checkpoint folders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.fileio import PathLike, read_json
from scratchgpt.tasks.classify.config import TASK_NAME, TRAINABLE_CHOICES, ClassifyModel


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
    # The head is no longer the embedding matrix; the config must say so, or the checkpoint
    # would leave the head out of the weights file.
    model.cfg = cfg.replace(tie_weights=False)
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
    path: PathLike, *, device: torch.device | str = "cpu", merge: bool = True
) -> Classifier:
    """A classifier from a checkpoint folder or a run folder (its newest checkpoint) written by
    fine-tuning; LoRA adapters are merged into the weights unless ``merge`` is False."""
    from safetensors.torch import load_file

    from scratchgpt.checkpoints import (
        CHECKPOINTS_DIR,
        CONFIG_FILE,
        TOKENIZER_FILE,
        WEIGHTS_FILE,
        read_manifest,
        resolve_checkpoint,
    )
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import GPTModel

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint folder")
    if p.is_dir() and not (p / CONFIG_FILE).is_file() and (p / CHECKPOINTS_DIR).is_dir():
        p = resolve_checkpoint(p)
    if not (p / CONFIG_FILE).is_file():
        raise CheckpointError(f"{p}: not a checkpoint folder (no {CONFIG_FILE})")
    raw = read_json(p / CONFIG_FILE)
    meta = read_manifest(p).get("metadata", {}) if isinstance(raw, dict) else {}
    if not isinstance(raw, dict) or "model_type" in raw or meta.get("task") != TASK_NAME:
        what = (
            "a Hugging Face GPT-2 model"
            if isinstance(raw, dict) and "model_type" in raw
            else (f"a {meta.get('task') or 'language-model'} checkpoint")
        )
        raise CheckpointError(
            f"{p}: not a classifier ({what}, whose head predicts tokens); fine-tune it first: "
            f"scratchgpt finetune-classifier --checkpoint {p} --data spam --out RUN"
        )
    for key in ("label_names", "max_length", "pad_token_id"):
        if key not in meta:
            raise CheckpointError(f"{p}: classifier metadata lacks {key!r} (scratchgpt.json)")
    cfg = GPTConfig.from_dict(raw, source=str(p / CONFIG_FILE))
    labels = [str(x) for x in meta["label_names"]]
    model = GPTModel(cfg.replace(init="pytorch"))
    lora = meta.get("lora") or None
    make_classifier(
        model,
        len(labels),
        trainable="lora" if lora else "all",
        **(
            {
                "lora_rank": lora["rank"],
                "lora_alpha": lora["alpha"],
                "lora_targets": lora["targets"],
            }
            if lora
            else {}
        ),
    )
    model.cfg = cfg
    try:
        weights = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p / WEIGHTS_FILE}: corrupt or missing ({e})") from None
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{p / WEIGHTS_FILE}: weights do not match the classifier its metadata describes "
            f"(missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]})"
        )
    if lora and merge:
        from scratchgpt.model.lora import merge_lora

        merge_lora(model)
    tokenizer = None
    if (p / TOKENIZER_FILE).is_file():
        from scratchgpt.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(p / TOKENIZER_FILE)
    else:
        from scratchgpt.tokenizers import get_tokenizer

        tokenizer = get_tokenizer("gpt2")
    model.requires_grad_(False)
    return Classifier(
        model.to(device).eval(), tokenizer, labels, int(meta["max_length"]),
        int(meta["pad_token_id"]), p, dict(meta),
    )  # fmt: skip


def load_base_model(cfg: ClassifyModel) -> tuple[nn.Module, Any, str]:
    """(GPTModel, tokenizer, description) of the starting model."""
    from scratchgpt.checkpoints import load_checkpoint
    from scratchgpt.tokenizers import get_tokenizer

    if cfg.random_init:
        from scratchgpt.config import GPTConfig
        from scratchgpt.model import GPTModel

        tokenizer = get_tokenizer("gpt2")
        mcfg = GPTConfig.from_preset(cfg.random_init, vocab_size=tokenizer.vocab_size)
        return GPTModel(mcfg), tokenizer, f"random {cfg.random_init}"
    if cfg.gpt2:
        from scratchgpt.interop.hub import resolve_model_path

        loaded = load_checkpoint(resolve_model_path(cfg.gpt2))
        return loaded.model, loaded.tokenizer, f"GPT-2 {cfg.gpt2}"
    path = Path(str(cfg.checkpoint))
    if not path.exists():
        raise CheckpointError(f"--checkpoint {path}: no such folder")
    loaded = load_checkpoint(path)
    if loaded.metadata.get("task") == TASK_NAME:
        raise CheckpointError(
            f"{loaded.path} is already a classifier; to continue its run use --resume with its "
            "--out folder"
        )
    tokenizer = loaded.tokenizer or get_tokenizer("gpt2")
    return loaded.model, tokenizer, f"checkpoint {loaded.path}"
