"""How a classification run relates to the book's code (chapter 6, appendix E).

A run whose training settings are those of a bundled book preset (``book-ch6``,
``book-appendix-e``) reproduces the book's ``train_classifier_simple`` step for step, except
where scratchgpt chooses differently on purpose. :func:`book_note` names the preset and those
differences in one log line, so a reader comparing the printed numbers with the book's knows
what to expect (tests/test_classification.py and tests/test_lora.py check both halves).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from scratchgpt.tasks.classify.config import ClassifyConfig, ClassifyOptions
from scratchgpt.training.config import TrainConfig, preset_mapping
from scratchgpt.training.setup import resolve_device, resolve_precision

BOOK_SECTIONS = {"book-ch6": "chapter 6", "book-appendix-e": "appendix E"}
# The loop settings that change the numbers of a step (not the seed, the run's length, where or
# how often it evaluates, logs and saves).
RECIPE_FIELDS = (
    "batch_size", "grad_accum_steps", "lr", "schedule", "warmup_steps", "warmup_init_lr",
    "min_lr", "weight_decay", "decay_embeddings", "decay_all_parameters", "beta1", "beta2",
    "adam_eps", "grad_clip", "clip_during_warmup", "shuffle", "drop_last",
)  # fmt: skip


def _recipe(train: TrainConfig, classify: ClassifyOptions) -> dict[str, Any]:
    """The settings that make a classification recipe, as a comparable dict."""
    keys = ["trainable"]
    keys += ["lora_rank", "lora_alpha", "lora_targets"] if classify.trainable == "lora" else []
    keys += ["train_blocks"] if classify.trainable == "last-blocks" else []
    return {
        **{f"train.{k}": getattr(train, k) for k in RECIPE_FIELDS},
        **{f"classify.{k}": getattr(classify, k) for k in keys},
    }


def matching_book_preset(cfg: ClassifyConfig) -> str | None:
    """The book preset whose recipe settings (optimizer, batches, what trains) ``cfg`` has."""
    mine = _recipe(cfg.train, cfg.classify)
    for name in BOOK_SECTIONS:
        preset = preset_mapping(name)
        train = TrainConfig(**(preset.get("train") or {}))
        if _recipe(train, ClassifyOptions(**(preset.get("classify") or {}))) == mine:
            return name
    return None


def book_differences(cfg: ClassifyConfig, model: nn.Module) -> list[str]:
    """What this run does differently from the book's code, as short phrases."""
    out = [
        "the loss and predictions read each text's last real token (book: the last position, "
        "padding in shorter texts)"
    ]
    if cfg.train.shuffle:
        out.append(
            f"data order from a generator seeded by (seed {cfg.train.seed}, epoch) (book: "
            "DataLoader shuffling on the global RNG)"
        )
    if cfg.classify.trainable == "lora":
        out.append(
            "LoRA A matrices drawn right after the new head (book notebook: after re-seeding and "
            "an accuracy check whose data loaders draw 4 numbers)"
        )
    precision = cfg.train.precision
    if precision == "auto":
        bf16 = resolve_precision("auto", resolve_device(cfg.train.device)) is not None
        precision = "bf16" if bf16 else "fp32"
    if precision != "fp32":
        out.append(f"{precision} autocast (book: fp32)")
    drop = getattr(getattr(model, "cfg", None), "drop_rate", 0.0)
    if drop:
        out.append(f"dropout {drop} (book: 0.0)")
    out.append(
        "evaluation once per epoch on all validation batches, 'Step N' after N updates (book: "
        "every 50 steps on 5 batches, 'Step 000000' after the first update)"
    )
    return out


def book_note(cfg: ClassifyConfig, model: nn.Module) -> str | None:
    """The log line of a run with a book preset's settings: which preset, and how the run
    differs from the book's code; None for other settings."""
    name = matching_book_preset(cfg)
    if name is None:
        return None
    return (
        f"recipe: preset {name} (the book's {BOOK_SECTIONS[name]}); differences from the book's "
        "code: " + "; ".join(book_differences(cfg, model))
    )


__all__ = ["book_differences", "book_note", "matching_book_preset"]
