"""Deprecated: checkpoint folders moved to :mod:`scratchgpt.weights`.

``from scratchgpt.checkpoints import save_checkpoint, load_checkpoint`` keeps working for one
release with a DeprecationWarning; use ``scratchgpt.weights`` (or ``scratchgpt.load_model``).
"""

from __future__ import annotations

from scratchgpt._moved import moved_names

_NATIVE = "scratchgpt.weights.native"
_TENSORS = "scratchgpt.weights.tensors"
_RUNS = "scratchgpt.weights.runs"
_LOAD = "scratchgpt.weights.load"

__getattr__ = moved_names(
    "scratchgpt.checkpoints",
    {
        **dict.fromkeys(
            ["FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "CONFIG_FILE", "TOKENIZER_FILE",
             "MANIFEST_FILE", "load_safetensors_model", "unwrap_model", "save_checkpoint",
             "write_checkpoint_files", "read_manifest", "locate_checkpoint"],
            _NATIVE,
        ),
        **dict.fromkeys(
            ["corrupt_error", "SafetensorsSource", "DictSource", "TensorMap", "check_source",
             "meta_model", "materialize", "own_plan"],
            _TENSORS,
        ),
        **dict.fromkeys(
            ["CHECKPOINTS_DIR", "LATEST_FILE", "BEST_FILE", "read_pointer", "resolve_checkpoint"],
            _RUNS,
        ),
        "LoadedModel": _LOAD,
        "load_checkpoint": _LOAD,
        "resolve_checkpoint_path": f"{_LOAD}:resolve_path",
        "OVERWRITE_HINT": "scratchgpt.fileio",
    },
)  # fmt: skip
