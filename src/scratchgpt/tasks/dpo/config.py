"""The preference-tuning (DPO) recipe's config: ``model`` / ``data`` / ``train`` / ``dpo``.

Defaults are the book's ``ch07/04_preference-tuning-with-dpo`` notebook (the preset
``book-dpo``); the whole config is written to ``config.yaml`` in the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from scratchgpt.data.chat_style import AUTO_STYLE
from scratchgpt.data.instructions import STYLE_NAMES
from scratchgpt.errors import ConfigError
from scratchgpt.tasks.instruct.config import RESPONSE_PROMPTS, InstructModel
from scratchgpt.training.config import RecipeConfig, TrainConfig, preset_mapping
from scratchgpt.training.fields import setting, validate_fields

# How a response's log-probability is reduced over its tokens: the book's notebook averages
# (compute_logprobs), the DPO paper and TRL sum.
LOGPROB_REDUCTIONS = ("mean", "sum")
_FIELDS = ("instruction", "input", "chosen", "rejected")


def book_dpo_train_config(**overrides: Any) -> TrainConfig:
    """The loop settings of the book's DPO notebook (the preset ``book-dpo``), with
    ``overrides``."""
    return TrainConfig(**{**preset_mapping("book-dpo")["train"], **overrides})


@dataclass
class PreferenceData:
    """The preference records and how they are split and truncated."""

    source: str | None = setting(
        None,
        "JSON or JSONL records with chosen/rejected responses (default: the bundled 1,100 "
        "records of the book's instruction-data-with-preference.json)",
    )
    instruction_field: str = setting("instruction", "the records' field holding the prompt")
    input_field: str = setting("input", "the records' field holding the input (may be absent)")
    chosen_field: str = setting("chosen", "the records' field holding the preferred response")
    rejected_field: str = setting("rejected", "the records' field holding the other response")
    train_frac: float = setting(0.85, "training share (the first records)")
    test_frac: float = setting(0.10, "test share (the next records; the rest validates)")
    allowed_max_length: int | None = setting(
        None, "truncate each text to N tokens (default: the model's context length)"
    )

    def __post_init__(self) -> None:
        validate_fields(self, "data")
        if self.allowed_max_length is not None and self.allowed_max_length < 2:
            raise ConfigError(f"allowed_max_length must be >= 2, got {self.allowed_max_length}")

    @property
    def fields(self) -> dict[str, str]:
        """Our record field names -> the file's."""
        return {name: getattr(self, f"{name}_field") for name in _FIELDS}


@dataclass
class DPOOptions:
    """What makes the run preference tuning: beta, the log-probability, prompt style, LoRA and
    the test responses."""

    beta: float = setting(
        0.1, "DPO's beta: how far the policy may move from the reference (the book's 0.1)"
    )
    logprob: str = setting(
        "mean",
        "a response's log-probability: mean over its tokens (the book's notebook) or sum (the "
        "DPO paper, TRL)",
        LOGPROB_REDUCTIONS,
    )
    prompt_style: str = setting(
        AUTO_STYLE,
        "prompt template (auto: the checkpoint's own, else chat for a Llama 3 / Qwen3 / Gemma 3 "
        "model with its tokenizer, else the book's alpaca)",
        (AUTO_STYLE, *STYLE_NAMES),
    )
    lora_rank: int = setting(
        0,
        "train LoRA adapters of rank R on the frozen model; the reference model is then the "
        "same model with its adapters switched off (0: full fine-tuning against a frozen copy)",
    )
    lora_alpha: float = setting(16.0, "LoRA alpha")
    response_prompt: str = setting(
        "book",
        "how test responses are prompted (as finetune-instruct: book or marker)",
        RESPONSE_PROMPTS,
    )
    response_tokens: int = setting(256, "new tokens per test response")
    response_batch_size: int = setting(8, "test records answered per batch")
    responses: bool = setting(True, "answer the test split into OUT/responses.json after training")

    def __post_init__(self) -> None:
        validate_fields(self, "dpo")
        if not self.beta > 0.0:
            raise ConfigError(f"dpo.beta must be > 0, got {self.beta!r}")
        if self.response_tokens < 1 or self.response_batch_size < 1:
            raise ConfigError("response_tokens and response_batch_size must be >= 1")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be >= 0, got {self.lora_rank}")


@dataclass(init=False)
class DPOConfig(RecipeConfig):
    """Everything a preference-tuning run needs besides its output folder."""

    model: InstructModel
    data: PreferenceData
    train: TrainConfig
    dpo: DPOOptions

    SECTIONS: ClassVar[dict[str, type]] = {
        "model": InstructModel,
        "data": PreferenceData,
        "train": TrainConfig,
        "dpo": DPOOptions,
    }
    RECIPE: ClassVar[str] = "dpo"
    DEFAULT_PRESET: ClassVar[str | None] = "book-dpo"
    EXCLUSIVE: ClassVar[tuple[str, ...]] = ("model.checkpoint", "model.gpt2")

    def check(self) -> None:
        if (self.model.checkpoint is None) == (self.model.gpt2 is None):
            raise ConfigError("give exactly one policy model: --checkpoint DIR or --gpt2 NAME")
