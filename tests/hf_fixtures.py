"""Hugging Face tokenizer folders built offline, for tests (nothing is downloaded).

``write_llama3_tokenizer(folder)`` and ``write_qwen3_tokenizer(folder)`` write what a model folder
of that family holds for its tokenizer: ``tokenizer.json`` (a tiny byte-level BPE trained here with
the ``tokenizers`` library, laid out like the published one: the family's pre-tokenizer regex, its
special tokens after the regular vocabulary, Llama 3's BOS post-processor), ``tokenizer_config.json``
(special tokens, chat template) and ``generation_config.json`` (end-of-sequence ids). Model tests
put a tiny random model next to them, with an embedding table of ``MODEL_VOCAB_SIZE`` rows.

``write_gemma3_tokenizer(folder)`` writes a Gemma-3-style folder: a SentencePiece-style BPE with
byte fallback (the pipeline of transformers' ``GemmaTokenizer``), Gemma's control tokens at their
ids, BOS prepended, and Gemma 3's own chat template (:data:`GEMMA3_CHAT_TEMPLATE`).
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

# Gemma 3's chat template, as published in the tokenizer_config.json of google/gemma-3-1b-it,
# gemma-3-4b-it and gemma-3-270m-it (and quoted, with a list-only system message, in
# transformers' tests/models/gemma3/test_processing_gemma3.py): the system message is folded into
# the first user turn, "assistant" is written "model", roles must alternate.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Gemma 3's first 107 ids: <pad>, <eos>, <bos>, <unk>, <mask>, [@BOS@], <unused0>..<unused98>,
# then <start_of_turn> (105) and <end_of_turn> (106). The unused ones are plain added tokens.
GEMMA3_ADDED = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "[@BOS@]",
    *(f"<unused{i}>" for i in range(99)),
    "<start_of_turn>",
    "<end_of_turn>",
]
GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
# Gemma 3's image tokens: <start_of_image> and <end_of_image> inside the vocabulary (ids 255999 and
# 256000 in the real one; the last two ids here), and <image_soft_token>, the placeholder that
# the multimodal processor replaces with image embeddings, added one past the vocabulary (262144
# for a 262,144-row embedding table; MODEL_VOCAB_SIZE here).
GEMMA3_IMAGE_TOKENS = ["<start_of_image>", "<end_of_image>"]
GEMMA3_IMAGE_PLACEHOLDER = "<image_soft_token>"
# SentencePiece's byte pieces (<0x00>..<0xFF>): characters outside the vocabulary are spelled with
# them (byte fallback).
_BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
# The tiny vocabulary keeps ASCII and a few accented/CJK characters; the rest of the corpus (more
# CJK, Cyrillic, emoji) falls back to bytes.
_GEMMA_ALPHABET = [chr(c) for c in range(32, 127) if chr(c) != " "] + ["▁", "\n", "\t", "é", "日"]

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


@functools.cache
def gemma3_tokenizer_json() -> str:
    """The tokenizer.json text of the Gemma-3-style test tokenizer (built once per process).

    The pipeline is transformers' ``GemmaTokenizer``'s (and convert_slow_tokenizer's
    ``GemmaConverter``'s): normalizer Replace " " -> "▁" with no prefix space, pre-tokenizer
    Split " " (merged with previous), BPE with byte fallback and <unk> fused, decoder Replace "▁"
    -> " ", ByteFallback, Fuse; a post-processor that puts <bos> before every text.
    """
    # Learn merges on the "▁"-spelled corpus, split at word starts as SentencePiece does.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    pieces_left = (
        MODEL_VOCAB_SIZE - len(GEMMA3_ADDED) - len(_BYTE_PIECES) - len(GEMMA3_IMAGE_TOKENS)
    )
    trainer = trainers.BpeTrainer(
        vocab_size=pieces_left,
        initial_alphabet=_GEMMA_ALPHABET,
        limit_alphabet=len(_GEMMA_ALPHABET),
        show_progress=False,
    )
    trainer_tok.train_from_iterator(CORPUS * 3, trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab = {token: i for i, token in enumerate(GEMMA3_ADDED + _BYTE_PIECES)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    for token in GEMMA3_IMAGE_TOKENS:
        vocab[token] = len(vocab)
    assert len(vocab) == MODEL_VOCAB_SIZE
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_tokens(
        [AddedToken(t, special=t in GEMMA3_SPECIALS, normalized=False) for t in GEMMA3_ADDED]
    )
    images = [*GEMMA3_IMAGE_TOKENS, GEMMA3_IMAGE_PLACEHOLDER]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in images])
    bos = "<bos>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, vocab[bos])],
    )
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


def _write_folder(
    folder: Path,
    tokenizer_json: str,
    config: dict[str, Any],
    chat_template: str | None,
    config_extra: dict[str, Any] | None,
    generation: dict[str, Any] | None,
) -> None:
    """tokenizer.json, tokenizer_config.json (with the template, when there is one, and the
    caller's extra keys) and, when given, generation_config.json."""
    if chat_template is not None:
        config["chat_template"] = chat_template
    config.update(config_extra or {})
    _write(folder, "tokenizer.json", tokenizer_json)
    _write(folder, "tokenizer_config.json", config)
    if generation is not None:
        _write(folder, "generation_config.json", generation)


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
    eos = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
    gen = {"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": eos, "do_sample": True}
    template = LLAMA3_TEST_TEMPLATE if chat_template is _DEFAULT else chat_template
    _write_folder(folder, text, config, template, config_extra, gen if generation_config else None)


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
    gen = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
    }
    template = QWEN3_TEST_TEMPLATE if chat_template is _DEFAULT else chat_template
    _write_folder(folder, text, config, template, config_extra, gen if generation_config else None)


def write_gemma3_tokenizer(
    folder: Path | str,
    *,
    chat_template: str | object | None = _DEFAULT,
    generation_config: bool = True,
    config_extra: dict[str, Any] | None = None,
) -> None:
    """Write a Gemma-3-instruct-style tokenizer folder, laid out like google/gemma-3-270m-it's
    (BOS <bos> prepended; eos_token <eos>, pad <pad>; generation stops at <eos> and
    <end_of_turn>; the image placeholder <image_soft_token> at id MODEL_VOCAB_SIZE, one past
    the model's embedding rows, as in the published folders).

    Arguments as for :func:`write_llama3_tokenizer` (default template: Gemma 3's own).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = gemma3_tokenizer_json()
    ids = _ids(text)
    config: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": _added_tokens_decoder(text),
        "boi_token": "<start_of_image>",
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eoi_token": "<end_of_image>",
        "eos_token": "<eos>",
        "extra_special_tokens": {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": GEMMA3_IMAGE_PLACEHOLDER,
        },
        "image_token": GEMMA3_IMAGE_PLACEHOLDER,
        "model_max_length": 32768,
        "pad_token": "<pad>",
        "sp_model_kwargs": None,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    gen = {
        "bos_token_id": ids["<bos>"],
        "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
        "pad_token_id": ids["<pad>"],
        "top_k": 64,
        "top_p": 0.95,
        "do_sample": True,
    }
    template = GEMMA3_CHAT_TEMPLATE if chat_template is _DEFAULT else chat_template
    _write_folder(folder, text, config, template, config_extra, gen if generation_config else None)
