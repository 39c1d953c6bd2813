"""Instruction fine-tuning (the book's chapter 7) on the shared training loop.

The recipe is :class:`InstructConfig` (``model`` / ``data`` / ``train`` / ``instruct``, the book's
settings in the preset ``book-ch7``) + :class:`InstructTask` + :func:`run` (also spelled
``finetune_instruct``), the same shape as pretraining and classification. Modules: ``config``
(the sections, no torch), ``task`` (loss, evaluation, sample), ``loading`` (base and tuned models,
LoRA), ``responses`` (answering records), ``recipe`` (the job).
"""

from __future__ import annotations

from scratchgpt._moved import moved_constant
from scratchgpt.tasks.instruct.config import (
    INSTRUCT_CONFIG_FILE,
    InstructConfig,
    InstructData,
    InstructModel,
    InstructOptions,
    book_train_config,
)
from scratchgpt.tasks.instruct.loading import (
    GPT2_VOCAB_SIZE,
    checkpoint_style,
    load_base_model,
    load_instruct_model,
    pad_id_for,
)
from scratchgpt.tasks.instruct.recipe import (
    InstructResult,
    build_instruction_data,
    finetune_instruct,
    load_instruct_config,
    run,
)
from scratchgpt.tasks.instruct.responses import (
    RESPONSES_FILE,
    PartialResponses,
    generate_responses,
    write_responses,
)
from scratchgpt.tasks.instruct.task import InstructTask, calc_loss_batch
from scratchgpt.training.recipe import preset_mapping

__all__ = [
    "GPT2_VOCAB_SIZE",
    "INSTRUCT_CONFIG_FILE",
    "RESPONSES_FILE",
    "InstructConfig",
    "InstructData",
    "InstructModel",
    "InstructOptions",
    "InstructResult",
    "InstructTask",
    "PartialResponses",
    "book_train_config",
    "build_instruction_data",
    "calc_loss_batch",
    "checkpoint_style",
    "finetune_instruct",
    "generate_responses",
    "load_base_model",
    "load_instruct_config",
    "load_instruct_model",
    "pad_id_for",
    "run",
    "write_responses",
]


# The book's loop settings moved into presets/book-ch7.yaml.
__getattr__ = moved_constant(
    "scratchgpt.tasks.instruct.BOOK_TRAIN_DEFAULTS",
    lambda: dict(preset_mapping("book-ch7")["train"]),
    "use book_train_config() or the preset book-ch7",
)
