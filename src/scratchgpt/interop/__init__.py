"""GPT-2 weights from elsewhere: Hugging Face folders, the book's state dicts, OpenAI's
TensorFlow checkpoint, and downloads by name; and export back to Hugging Face's layout."""

from scratchgpt.interop.gpt2_weights import (
    config_from_hf,
    gpt2_from_openai_params,
    hf_config_from_ours,
    hf_plan,
    hf_state_dict,
    load_book_state_dict,
    load_hf_gpt2,
    load_openai_tf_gpt2,
    openai_to_hf_name,
    save_hf_gpt2,
)
from scratchgpt.interop.hub import (
    GPT2_REPOS,
    canonical_model_name,
    download_gpt2,
    hub_repo,
    model_cache_dir,
    resolve_model_path,
)

__all__ = [
    "GPT2_REPOS",
    "canonical_model_name",
    "config_from_hf",
    "download_gpt2",
    "gpt2_from_openai_params",
    "hf_config_from_ours",
    "hf_plan",
    "hf_state_dict",
    "hub_repo",
    "load_book_state_dict",
    "load_hf_gpt2",
    "load_openai_tf_gpt2",
    "model_cache_dir",
    "openai_to_hf_name",
    "resolve_model_path",
    "save_hf_gpt2",
]
