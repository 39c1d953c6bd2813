"""Deprecated: moved to :mod:`scratchgpt.weights.hf.gpt2` (Hugging Face GPT-2) and
:mod:`scratchgpt.weights.openai` (the book's state dicts, OpenAI's TensorFlow checkpoint)."""

from __future__ import annotations

from scratchgpt._moved import moved_names

__getattr__ = moved_names(
    "scratchgpt.interop.gpt2_weights",
    dict.fromkeys(
        ["load_book_state_dict", "openai_to_hf_name", "hf_to_openai_name",
         "gpt2_from_openai_params", "load_openai_tf_gpt2"],
        "scratchgpt.weights.openai",
    ),
    rest="scratchgpt.weights.hf.gpt2",
)  # fmt: skip
