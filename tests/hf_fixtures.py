"""Hugging Face tokenizer folders built offline, for tests (nothing is downloaded).

``write_llama3_tokenizer(folder)`` and ``write_qwen3_tokenizer(folder)`` write what a model folder
of that family holds for its tokenizer: ``tokenizer.json`` (a tiny byte-level BPE trained here with
the ``tokenizers`` library, laid out like the published one: the family's pre-tokenizer regex, its
special tokens after the regular vocabulary, Llama 3's BOS post-processor), ``tokenizer_config.json``
(special tokens, chat template) and ``generation_config.json`` (end-of-sequence ids). Model tests
put a tiny random model next to them, with an embedding table of ``MODEL_VOCAB_SIZE`` rows.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

# The pre-tokenizer patterns of the two families (Llama 3 groups digits by three, Qwen by one).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "Hello, world! How are you today? I'm fine, thanks; we'll see.",
    "Numbers: 12345 and 3.14159, dates like 2024-07-26, money $100.",
    "def main():\n    print('hello')\n    return 0\n",
    "Unicode: héllo wörld, naïve café, 日本語のテキスト, Привет мир, 😀 🚀 emoji.",
    "You are a helpful assistant. Answer the question briefly.",
    "What is the capital of France? The capital of France is Paris.",
]

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
]
QWEN3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3 also has added tokens that are not special: they are matched in text but are not control
# tokens (decoding with skip_special_tokens keeps them).
QWEN3_ADDED = ["<think>", "</think>", "<tool_call>", "</tool_call>"]

# Small templates in each family's format, for tests that need one in the folder.
LLAMA3_TEST_TEMPLATE = (
    "{{- bos_token }}{% for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
QWEN3_TEST_TEMPLATE = (
    "{% for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)

# Ids of both test tokenizers are below this: a tiny model's embedding table can have this many
# rows, more than the tokenizer has ids, as Qwen3's does (151,936 rows for 151,669 ids).
MODEL_VOCAB_SIZE = 512

_DEFAULT = object()


def _byte_level(pattern: str, *, nfc: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


@functools.cache
def llama3_tokenizer_json() -> str:
    """The tokenizer.json text of the Llama-3-style test tokenizer (built once per process)."""
    tok = _byte_level(LLAMA3_PATTERN, nfc=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, tok.token_to_id(bos))],
            ),
        ]
    )
    return tok.to_str()


@functools.cache
def qwen3_tokenizer_json() -> str:
    """The tokenizer.json text of the Qwen3-style test tokenizer (built once per process)."""
    tok = _byte_level(QWEN_PATTERN, nfc=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIALS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_ADDED])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def _added_tokens_decoder(tokenizer_json: str) -> dict[str, Any]:
    out = {}
    for t in json.loads(tokenizer_json)["added_tokens"]:
        out[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip")} | {
            "single_word": t["single_word"],
            "special": t["special"],
        }
    return out


def _write(folder: Path, name: str, data: Any) -> None:
    text = data if isinstance(data, str) else json.dumps(data, indent=2, ensure_ascii=False)
    (folder / name).write_text(text, encoding="utf-8")


def _ids(tokenizer_json: str) -> dict[str, int]:
    return {t["content"]: t["id"] for t in json.loads(tokenizer_json)["added_tokens"]}


def write_llama3_tokenizer(
    folder: Path | str,
    *,
    chat_template: str | object | None = _DEFAULT,
    generation_config: bool = True,
    config_extra: dict[str, Any] | None = None,
) -> None:
    """Write a Llama-3.x-Instruct-style tokenizer folder (BOS prepended; eos_token <|eot_id|>).

    ``chat_template``: the template to put in tokenizer_config.json (default: a small Llama 3
    one; None: no template, as in a base model). ``config_extra`` updates tokenizer_config.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = llama3_tokenizer_json()
    ids = _ids(text)
    config: dict[str, Any] = {
        "added_tokens_decoder": _added_tokens_decoder(text),
        "bos_token": "<|begin_of_text|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is _DEFAULT:
        chat_template = LLAMA3_TEST_TEMPLATE
    if chat_template is not None:
        config["chat_template"] = chat_template
    config.update(config_extra or {})
    _write(folder, "tokenizer.json", text)
    _write(folder, "tokenizer_config.json", config)
    if generation_config:
        eos = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
        gen = {"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": eos, "do_sample": True}
        _write(folder, "generation_config.json", gen)


def write_qwen3_tokenizer(
    folder: Path | str,
    *,
    chat_template: str | object | None = _DEFAULT,
    generation_config: bool = True,
    config_extra: dict[str, Any] | None = None,
) -> None:
    """Write a Qwen3-style tokenizer folder (no BOS; eos_token <|im_end|>, pad <|endoftext|>).

    Arguments as for :func:`write_llama3_tokenizer` (default template: a small ChatML one).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = qwen3_tokenizer_json()
    ids = _ids(text)
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _added_tokens_decoder(text),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if chat_template is _DEFAULT:
        chat_template = QWEN3_TEST_TEMPLATE
    if chat_template is not None:
        config["chat_template"] = chat_template
    config.update(config_extra or {})
    _write(folder, "tokenizer.json", text)
    _write(folder, "tokenizer_config.json", config)
    if generation_config:
        gen = {
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
            "do_sample": True,
        }
        _write(folder, "generation_config.json", gen)
