"""The classification recipe's config: ``model`` / ``data`` / ``train`` / ``classify``.

Defaults are the book's chapter 6 (the preset ``book-ch6``); the whole config is written to
``config.yaml`` in the run folder (older runs wrote ``finetune.json``, still read on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from scratchgpt.errors import ConfigError
from scratchgpt.training.config import RecipeConfig, TrainConfig
from scratchgpt.training.fields import setting, validate_fields

TASK_NAME = "classify"
TRAINABLE_CHOICES = ("last-blocks", "all", "head", "lora")
# What runs of older releases wrote into the run folder instead of config.yaml.
FINETUNE_CONFIG_FILE = "finetune.json"
# TrainConfig fields that ``classify.epoch_eval`` may size from the splits.
EPOCH_EVAL_FIELDS = ("eval_interval", "eval_batches")


@dataclass
class ClassifyModel:
    """The model to start from (exactly one of checkpoint, gpt2, random_init)."""

    checkpoint: str | None = setting(None, "start from a scratchgpt checkpoint or run folder")
    gpt2: str | None = setting(
        None,
        "start from GPT-2 weights (gpt2-small, ... or a Hugging Face folder; names must be "
        "downloaded: scratchgpt download)",
    )
    random_init: str | None = setting(
        None, "start from random weights of a model preset (gpt2-small, mini, tiny, ...)"
    )
    drop_rate: float | None = setting(
        None,
        "dropout rate while fine-tuning (default: the book's 0.0 when starting from loaded "
        "weights, --checkpoint or --gpt2; the preset's for --random-init)",
    )

    def __post_init__(self) -> None:
        validate_fields(self, "model")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"model.drop_rate must be in [0, 1), got {self.drop_rate!r}")


@dataclass
class ClassifyData:
    """The labelled texts and how they are split and padded."""

    source: str = setting(
        "spam",
        "'spam' (the bundled SMS Spam Collection, split as the book) or a CSV/TSV/JSONL file",
    )
    format: str | None = setting(
        None, "format of FILE (default: its suffix)", ("csv", "tsv", "jsonl")
    )
    text_column: str = setting("text", "column/field with the text")
    label_column: str = setting("label", "column/field with the label")
    split_column: str | None = setting(
        None,
        "column naming each row's split (train, val, test); without it the rows are shuffled "
        "and split by fractions",
    )
    train_frac: float = setting(0.7, "training share")
    val_frac: float = setting(0.1, "validation share")
    split_seed: int = setting(123, "seed of the shuffle before splitting")
    max_length: int | None = setting(
        None, "pad/truncate texts to N tokens (default: the longest training text)"
    )

    def __post_init__(self) -> None:
        validate_fields(self, "data")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")
        t, v = self.train_frac, self.val_frac
        if not (0 < t < 1 and 0 <= v < 1 and t + v <= 1):
            raise ConfigError(
                f"data.train_frac {t} and data.val_frac {v} must be in (0, 1) and [0, 1) and sum "
                "to at most 1 (the rest is the test set)"
            )


@dataclass
class ClassifyOptions:
    """What makes the run a classifier: labels, what trains, LoRA, evaluation per epoch."""

    labels: list[str] | None = setting(  # noqa: RUF009 (a Field with a default factory)
        None, "the label set, in id order (default: the sorted distinct labels)"
    )
    trainable: str = setting(
        "last-blocks",
        "what to train: the last train_blocks blocks + final norm + head (the book), all "
        "layers, the head only, or LoRA adapters",
        TRAINABLE_CHOICES,
    )
    train_blocks: int = setting(1, "blocks trained with last-blocks")
    lora_rank: int = setting(16, "LoRA rank")
    lora_alpha: float = setting(16.0, "LoRA alpha")
    lora_targets: list[str] = setting(  # noqa: RUF009 (a Field with a default factory)
        ["attention", "feed_forward", "head"], "LoRA targets: attention, feed_forward, head"
    )
    epoch_eval: list[str] = setting(  # noqa: RUF009 (a Field with a default factory)
        list(EPOCH_EVAL_FIELDS),
        "train fields set from the split sizes so that each epoch ends with one evaluation over "
        "the whole validation set (eval_interval: steps per epoch, eval_batches: all validation "
        "batches); a train field given in a file or flag is left out",
    )

    def __post_init__(self) -> None:
        validate_fields(self, "classify")
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {self.lora_rank}")
        from scratchgpt.model.lora import check_targets

        self.lora_targets = list(check_targets(self.lora_targets))
        bad = sorted(set(self.epoch_eval) - set(EPOCH_EVAL_FIELDS))
        if bad:
            raise ConfigError(
                f"classify.epoch_eval: unknown field(s) {bad}; choose from {list(EPOCH_EVAL_FIELDS)}"
            )


@dataclass(init=False)
class ClassifyConfig(RecipeConfig):
    """Everything a classification fine-tuning run needs besides its output folder."""

    model: ClassifyModel
    data: ClassifyData
    train: TrainConfig
    classify: ClassifyOptions

    SECTIONS: ClassVar[dict[str, type]] = {
        "model": ClassifyModel,
        "data": ClassifyData,
        "train": TrainConfig,
        "classify": ClassifyOptions,
    }
    RECIPE: ClassVar[str] = "classify"
    DEFAULT_PRESET: ClassVar[str | None] = "book-ch6"
    LEGACY_FILE: ClassVar[str | None] = FINETUNE_CONFIG_FILE
    EXCLUSIVE: ClassVar[tuple[str, ...]] = ("model.checkpoint", "model.gpt2", "model.random_init")
    LEGACY_FIELDS: ClassVar[dict[str, str]] = {
        **{k: f"model.{k}" for k in ("checkpoint", "gpt2", "random_init", "drop_rate")},
        "data": "data.source",
        **{
            k: f"data.{k}"
            for k in ("format", "text_column", "label_column", "split_column", "train_frac")
        },
        **{k: f"data.{k}" for k in ("val_frac", "split_seed", "max_length")},
        **{
            k: f"classify.{k}"
            for k in ("labels", "trainable", "train_blocks", "lora_rank", "lora_alpha")
        },
        "lora_targets": "classify.lora_targets",
    }

    def check(self) -> None:
        given = [n for n in ("checkpoint", "gpt2", "random_init") if getattr(self.model, n)]
        if len(given) != 1:
            raise ConfigError(
                "give exactly one starting model: --checkpoint DIR, --gpt2 NAME|DIR or "
                f"--random-init PRESET (got {given or 'none'})"
            )

    @classmethod
    def merge(cls, d: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
        out = super().merge(d, overrides, source)
        # A train field set by hand is not sized from the splits.
        given = [k for k in EPOCH_EVAL_FIELDS if f"train.{k}" in overrides]
        if given and "classify.epoch_eval" not in overrides:
            current = out["classify"].get("epoch_eval", list(EPOCH_EVAL_FIELDS))
            out["classify"]["epoch_eval"] = [k for k in current if k not in given]
        return out

    @classmethod
    def from_legacy_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """finetune.json: ``{"classify": flat fields, "train": the resolved TrainConfig}``."""
        out: dict[str, Any] = {"model": {}, "data": {}, "train": dict(d.get("train") or {})}
        out["classify"] = {"epoch_eval": []}  # its train values were already sized
        for key, value in (d.get("classify") or {}).items():
            section, _, name = cls.LEGACY_FIELDS.get(key, f"classify.{key}").partition(".")
            out[section][name] = value
        return out
