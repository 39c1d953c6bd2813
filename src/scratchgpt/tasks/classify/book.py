"""How a classification run relates to the book's code (chapter 6, appendix E).

A run whose training settings are those of a bundled book preset (``book-ch6``,
``book-appendix-e``) reproduces the book's ``train_classifier_simple`` step for step, except
where scratchgpt chooses differently on purpose. :func:`book_note` names the preset and those
differences in one log line, so a reader comparing the printed numbers with the book's knows
what to expect (tests/test_classification.py and tests/test_lora.py check both halves).
"""

from __future__ import annotations

from torch import nn

from scratchgpt.tasks.classify.config import ClassifyConfig
from scratchgpt.training.config import list_presets, preset_mapping

# Fields sized from the data, or how long to train: a shorter run follows the recipe as far as
# it goes.
_NOT_RECIPE = {"epoch_eval", "eval_interval", "eval_batches", "max_epochs"}
BOOK_SECTIONS = {"book-ch6": "chapter 6", "book-appendix-e": "appendix E"}


def matching_book_preset(cfg: ClassifyConfig) -> str | None:
    """The book preset whose ``train`` and ``classify`` settings ``cfg`` has, if any."""
    for name in list_presets("classify"):
        if name not in BOOK_SECTIONS:
            continue
        preset = preset_mapping(name)
        if all(
            getattr(getattr(cfg, section), key) == value
            for section in ("train", "classify")
            for key, value in (preset.get(section) or {}).items()
            if key not in _NOT_RECIPE
        ):
            return name
    return None


def book_differences(cfg: ClassifyConfig, model: nn.Module) -> list[str]:
    """What this run does differently from the book's code, as short phrases."""
    out = [
        "the loss and predictions read each text's last real token (book: the last position, "
        "padding in shorter texts)"
    ]
    trainable_1d = any(p.requires_grad and p.ndim < 2 for p in model.parameters())
    if cfg.train.weight_decay > 0 and trainable_1d:
        out.append("weight decay on matrices only (book: also on biases and LayerNorm)")
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
