"""Preference tuning with DPO (the book's ``ch07/04_preference-tuning-with-dpo``) on the shared
training loop.

The recipe is :class:`DPOConfig` (``model`` / ``data`` / ``train`` / ``dpo``, the book's settings
in the preset ``book-dpo``) + :class:`DPOTask` + :func:`run` (also spelled ``finetune_dpo``), the
same shape as the other recipes. Modules: ``config`` (the sections, no torch), ``task`` (loss,
rewards, evaluation), ``recipe`` (the job).
"""

from __future__ import annotations

from scratchgpt.tasks.dpo.config import (
    DPOConfig,
    DPOOptions,
    PreferenceData,
    book_dpo_train_config,
)
from scratchgpt.tasks.dpo.recipe import DPOResult, build_preference_data, finetune_dpo, run
from scratchgpt.tasks.dpo.task import DPOOutput, DPOTask, dpo_loss, sequence_logprobs

__all__ = [
    "DPOConfig",
    "DPOOptions",
    "DPOOutput",
    "DPOResult",
    "DPOTask",
    "PreferenceData",
    "book_dpo_train_config",
    "build_preference_data",
    "dpo_loss",
    "finetune_dpo",
    "run",
    "sequence_logprobs",
]
