"""Model weights: every format scratchgpt reads or writes, and the one loader.

- :mod:`~scratchgpt.weights.load`: :func:`load_model`, the single resolver of anything a user may
  name (checkpoint, run folder, pointer file, Hugging Face folder, hub name).
- :mod:`~scratchgpt.weights.native`: our checkpoint folder (safetensors + config.json +
  tokenizer.json + scratchgpt.json).
- :mod:`~scratchgpt.weights.runs`: run folder -> newest/best checkpoint.
- :mod:`~scratchgpt.weights.hf`: Hugging Face layouts, one mapping file per model family.
- :mod:`~scratchgpt.weights.openai`: the book's torch state dicts, OpenAI's TensorFlow checkpoint.
- :mod:`~scratchgpt.weights.hub`: pretrained weights by name (download cache, downloads).
- :mod:`~scratchgpt.weights.tensors`: tensor sources, mapping plans, materialisation.

Nothing here imports torch until a function needs it.
"""

from scratchgpt.weights.hf import (
    FAMILIES,
    HFFamily,
    config_from_hf,
    hf_config_from_ours,
    hf_family,
    hf_plan,
    hf_state_dict,
    load_hf_gpt2,
    save_hf_gpt2,
    save_hf_model,
)
from scratchgpt.weights.hub import (
    GPT2_REPOS,
    canonical_model_name,
    download_gpt2,
    download_model,
    hub_repo,
    model_cache_dir,
    resolve_model_path,
)
from scratchgpt.weights.load import (
    LoadedModel,
    ModelFiles,
    inspect_model,
    load_checkpoint,
    load_model,
    require_language_model,
    resolve_path,
    with_default_tokenizer,
)
from scratchgpt.weights.native import (
    CONFIG_FILE,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_safetensors_model,
    load_weights_into,
    locate_checkpoint,
    read_manifest,
    save_checkpoint,
    unwrap_model,
    verify_weights,
    write_checkpoint_files,
)
from scratchgpt.weights.openai import (
    gpt2_from_openai_params,
    load_book_state_dict,
    load_openai_tf_gpt2,
    openai_to_hf_name,
)
from scratchgpt.weights.runs import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    LATEST_FILE,
    read_pointer,
    resolve_checkpoint,
)

__all__ = [
    "BEST_FILE",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "FAMILIES",
    "GPT2_REPOS",
    "LATEST_FILE",
    "MANIFEST_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "HFFamily",
    "LoadedModel",
    "ModelFiles",
    "canonical_model_name",
    "config_from_hf",
    "download_gpt2",
    "download_model",
    "gpt2_from_openai_params",
    "hf_config_from_ours",
    "hf_family",
    "hf_plan",
    "hf_state_dict",
    "hub_repo",
    "inspect_model",
    "load_book_state_dict",
    "load_checkpoint",
    "load_hf_gpt2",
    "load_model",
    "load_openai_tf_gpt2",
    "load_safetensors_model",
    "load_weights_into",
    "locate_checkpoint",
    "model_cache_dir",
    "openai_to_hf_name",
    "read_manifest",
    "read_pointer",
    "require_language_model",
    "resolve_checkpoint",
    "resolve_model_path",
    "resolve_path",
    "save_checkpoint",
    "save_hf_gpt2",
    "save_hf_model",
    "unwrap_model",
    "verify_weights",
    "with_default_tokenizer",
    "write_checkpoint_files",
]
