"""The instruction-tuning recipe's config: ``model`` / ``data`` / ``train`` / ``instruct``.

Defaults are the book's chapter 7 (the preset ``book-ch7``); the whole config is written to
``config.yaml`` in the run folder (older runs wrote ``instruct_config.json``, still read on
resume).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from scratchgpt.data.chat_style import AUTO_STYLE
from scratchgpt.data.instructions import STYLE_NAMES
from scratchgpt.errors import ConfigError
from scratchgpt.training.config import RecipeConfig, TrainConfig, preset_mapping
from scratchgpt.training.fields import setting, validate_fields

# What runs of older releases wrote into the run folder instead of config.yaml.
INSTRUCT_CONFIG_FILE = "instruct_config.json"
_RECORD_FIELDS = ("instruction", "input", "output")
# How test responses are prompted (see responses.generate_responses).
RESPONSE_PROMPTS = ("book", "marker")


def book_train_config(**overrides: Any) -> TrainConfig:
    """The loop settings of the book's chapter 7 (the preset ``book-ch7``), with ``overrides``."""
    return TrainConfig(**{**preset_mapping("book-ch7")["train"], **overrides})


@dataclass
class InstructModel:
    """The base model (exactly one of checkpoint, gpt2)."""

    checkpoint: str | None = setting(
        None, "base model: a scratchgpt checkpoint, run folder or Hugging Face GPT-2 folder"
    )
    gpt2: str | None = setting(
        None, "GPT-2 weights from the download cache (gpt2-small, gpt2-medium, ...)"
    )
    drop_rate: float | None = setting(
        0.0,
        "dropout rate while fine-tuning (the book's 0.0; GPT-2's own config says 0.1; none: "
        "the base model's own)",
    )
    untie_head: bool = setting(
        True,
        "full fine-tuning of a tied model (GPT-2): give the output head its own copy of the "
        "token embeddings first, as the book does (false: keep them shared, a smaller model)",
    )

    def __post_init__(self) -> None:
        validate_fields(self, "model")
        if self.drop_rate is not None and not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"model.drop_rate must be in [0, 1), got {self.drop_rate!r}")


@dataclass
class InstructData:
    """The instruction records and how they are split and truncated."""

    source: str | None = setting(
        None, "JSON or JSONL instruction records (default: the bundled 1,100 records)"
    )
    instruction_field: str = setting("instruction", "the records' field holding the instruction")
    input_field: str = setting("input", "the records' field holding the input")
    output_field: str = setting("output", "the records' field holding the output")
    train_frac: float = setting(0.85, "training share (the first records)")
    test_frac: float = setting(0.10, "test share (the next records; the rest validates)")
    allowed_max_length: int | None = setting(
        None, "truncate examples to N tokens (default: the model's context length)"
    )

    def __post_init__(self) -> None:
        validate_fields(self, "data")
        if self.allowed_max_length is not None and self.allowed_max_length < 2:
            raise ConfigError(f"allowed_max_length must be >= 2, got {self.allowed_max_length}")

    @property
    def fields(self) -> dict[str, str]:
        """Our record field names -> the file's."""
        return {name: getattr(self, f"{name}_field") for name in _RECORD_FIELDS}


@dataclass
class InstructOptions:
    """What makes the run instruction tuning: prompt style and masking, LoRA, test responses."""

    prompt_style: str = setting(
        AUTO_STYLE,
        "prompt template, stored in the checkpoint (alpaca: the book's; chat: the model's own "
        "chat template; auto: chat when the model's tokenizer has a chat template or belongs to "
        "a Llama 3 / Qwen3 / Gemma 3 folder, else alpaca)",
        (AUTO_STYLE, *STYLE_NAMES),
    )
    mask_prompt: bool = setting(
        False, "leave the prompt tokens out of the loss (exercise 7.2; the book's main text: off)"
    )
    response_prompt: str = setting(
        "book",
        "how test responses are prompted: book (the record's instruction and input alone; the "
        "model writes the response marker, removed afterwards, as the book's section 7.7) or "
        "marker (the prompt ends with the marker; stops at the next user turn)",
        RESPONSE_PROMPTS,
    )
    response_tokens: int = setting(256, "new tokens per test response")
    response_batch_size: int = setting(8, "test records answered per batch")
    responses: bool = setting(True, "answer the test split into OUT/responses.json after training")
    lora_rank: int = setting(
        0,
        "train LoRA adapters of rank R (appendix E) on a frozen model instead of every weight "
        "(0: full fine-tuning; the book's appendix uses 16)",
    )
    lora_alpha: float = setting(16.0, "LoRA alpha")

    def __post_init__(self) -> None:
        validate_fields(self, "instruct")
        if self.response_tokens < 1 or self.response_batch_size < 1:
            raise ConfigError("response_tokens and response_batch_size must be >= 1")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be >= 0, got {self.lora_rank}")


@dataclass(init=False)
class InstructConfig(RecipeConfig):
    """Everything an instruction fine-tuning run needs besides its output folder."""

    model: InstructModel
    data: InstructData
    train: TrainConfig
    instruct: InstructOptions

    SECTIONS: ClassVar[dict[str, type]] = {
        "model": InstructModel,
        "data": InstructData,
        "train": TrainConfig,
        "instruct": InstructOptions,
    }
    RECIPE: ClassVar[str] = "instruct"
    DEFAULT_PRESET: ClassVar[str | None] = "book-ch7"
    LEGACY_FILE: ClassVar[str | None] = INSTRUCT_CONFIG_FILE
    EXCLUSIVE: ClassVar[tuple[str, ...]] = ("model.checkpoint", "model.gpt2")
    LEGACY_FIELDS: ClassVar[dict[str, str]] = {
        "checkpoint": "model.checkpoint",
        "gpt2": "model.gpt2",
        "data": "data.source",
        "fields": "data.fields",
        "train_frac": "data.train_frac",
        "test_frac": "data.test_frac",
        "allowed_max_length": "data.allowed_max_length",
        "style": "instruct.prompt_style",
        **{
            k: f"instruct.{k}"
            for k in ("mask_prompt", "response_tokens", "response_batch_size", "responses")
        },
        "lora_rank": "instruct.lora_rank",
        "lora_alpha": "instruct.lora_alpha",
    }

    def check(self) -> None:
        if (self.model.checkpoint is None) == (self.model.gpt2 is None):
            raise ConfigError("give exactly one base model: --checkpoint DIR or --gpt2 NAME")

    @classmethod
    def legacy_overrides(cls, flat: dict[str, Any]) -> dict[str, Any]:
        out = super().legacy_overrides({k: v for k, v in flat.items() if k != "fields"})
        for name, value in (flat.get("fields") or {}).items():
            if name not in _RECORD_FIELDS:
                raise ConfigError(f"fields: unknown record field {name!r}; use {_RECORD_FIELDS}")
            out[f"data.{name}_field"] = value
        return out

    @classmethod
    def merge(cls, d: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
        out = super().merge(d, overrides, source)
        # Samples follow the evaluations unless their interval is set on its own.
        if "train.eval_interval" in overrides and "train.sample_interval" not in overrides:
            out["train"]["sample_interval"] = overrides["train.eval_interval"]
        return out

    @classmethod
    def saved_dict(cls, run_dir: Any) -> dict[str, Any] | None:
        """The saved config of a run folder; settings that runs of older releases did not save
        take the values those runs had, so they resume as they started (the base model's own
        dropout, its tied head, prompts ending with the response marker)."""
        d = super().saved_dict(run_dir)
        if d is None:
            return None
        before = {"model": {"drop_rate": None, "untie_head": False},
                  "instruct": {"response_prompt": "marker"}}  # fmt: skip
        return {**d, **{k: {**v, **(d.get(k) or {})} for k, v in before.items()}}

    @classmethod
    def from_legacy_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """instruct_config.json: the flat fields with a nested ``train``."""
        out: dict[str, Any] = {"model": {}, "data": {}, "instruct": {}}
        out["train"] = dict(d.get("train") or {})
        flat = {k: v for k, v in d.items() if k != "train"}
        unknown = sorted(set(flat) - set(cls.LEGACY_FIELDS))
        if unknown:
            raise ConfigError(f"{INSTRUCT_CONFIG_FILE}: unknown field(s) {unknown}")
        for key, value in cls.legacy_overrides(flat).items():
            section, _, name = key.partition(".")
            out[section][name] = value
        return out

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> InstructConfig:
        """Build from nested sections (the flat dict of older releases still works, with a
        DeprecationWarning)."""
        flat = isinstance(d, dict) and not set(d) <= set(cls.SECTIONS)
        if flat and set(d) <= {*cls.LEGACY_FIELDS, "train"}:
            warnings.warn(
                "InstructConfig.from_dict(flat dict) is deprecated; pass the sections "
                f"{list(cls.SECTIONS)}",
                DeprecationWarning,
                stacklevel=2,
            )
            return cls.from_flat_dict(d, source)
        return super().from_dict(d, source)

    @classmethod
    def from_flat_dict(cls, d: dict[str, Any], source: str = "config") -> InstructConfig:
        """From the flat dict of older releases (``instruct_config.json``'s layout)."""
        return super().from_dict(cls.from_legacy_dict(d), source)
