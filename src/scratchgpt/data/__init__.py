"""Data: sliding windows and token shards for pretraining, labelled texts for classification,
instruction records for fine-tuning, and the bundled or downloadable sources.

Names are imported lazily so that ``scratchgpt.data.sources`` (and the tokenizing worker
processes of ``prepare``) do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SlidingWindowDataset": "pretraining",
    "GPTDatasetV1": "pretraining",
    "create_dataloader": "pretraining",
    "create_dataloader_v1": "pretraining",
    "tokenize_text": "pretraining",
    "ShardDataset": "pretraining",
    "create_shard_dataloader": "pretraining",
    "shard_paths": "pretraining",
    "ShardHeader": "shards",
    "ShardWriter": "shards",
    "write_shard": "shards",
    "read_shard_header": "shards",
    "load_shard": "shards",
    "dtype_for_vocab": "shards",
    "prepare": "corpus",
    "PrepareResult": "corpus",
    "get_path": "sources",
    "download": "sources",
    "load_text": "sources",
    "Source": "sources",
    "SOURCES": "sources",
    "read_sms_spam": "classification",
    "spam_splits": "classification",
    "load_labelled": "classification",
    "ClassificationDataset": "classification",
    "load_instruction_records": "instructions",
    "load_preference_records": "instructions",
    "split_records": "instructions",
    "format_input": "instructions",
    "InstructionDataset": "instructions",
    "custom_collate_fn": "instructions",
    "PreferenceDataset": "preferences",
    "PreferenceCollator": "preferences",
}

__all__ = [
    "SOURCES",
    "ClassificationDataset",
    "GPTDatasetV1",
    "InstructionDataset",
    "PreferenceCollator",
    "PreferenceDataset",
    "PrepareResult",
    "ShardDataset",
    "ShardHeader",
    "ShardWriter",
    "SlidingWindowDataset",
    "Source",
    "create_dataloader",
    "create_dataloader_v1",
    "create_shard_dataloader",
    "custom_collate_fn",
    "download",
    "dtype_for_vocab",
    "format_input",
    "get_path",
    "load_instruction_records",
    "load_labelled",
    "load_preference_records",
    "load_shard",
    "load_text",
    "prepare",
    "read_shard_header",
    "read_sms_spam",
    "shard_paths",
    "spam_splits",
    "split_records",
    "tokenize_text",
    "write_shard",
]

if TYPE_CHECKING:
    from scratchgpt.data.corpus import PrepareResult, prepare
    from scratchgpt.data.pretraining import (
        GPTDatasetV1,
        ShardDataset,
        SlidingWindowDataset,
        create_dataloader,
        create_dataloader_v1,
        create_shard_dataloader,
        shard_paths,
        tokenize_text,
    )
    from scratchgpt.data.shards import (
        ShardHeader,
        ShardWriter,
        dtype_for_vocab,
        load_shard,
        read_shard_header,
        write_shard,
    )
    from scratchgpt.data.sources import SOURCES, Source, download, get_path, load_text


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scratchgpt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"scratchgpt.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
