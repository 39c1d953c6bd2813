"""GGUF for Llama 3.x ("llama" architecture) and Qwen3 ("qwen3"), and Hugging Face tokenizers.

The tensors are our Hugging Face export renamed with the ``gguf`` package's own Hugging Face ->
GGUF name map, as llama.cpp's ``convert_hf_to_gguf.py`` does; like that converter we permute
Llama's query/key rows from Hugging Face's half-split RoPE layout to the interleaved pairs
llama.cpp's "llama" graph rotates (Qwen3's graph rotates half-split pairs: no permutation), and
store Llama 3's RoPE scaling as the ``rope_freqs`` factors llama.cpp divides frequencies by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scratchgpt.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

GGUF_ARCH = {"llama3": "llama", "qwen3": "qwen3"}
# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) for each family's regex.
PRE_TOKENIZER = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen3": "qwen2"}
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Half-split RoPE rows (Hugging Face) -> interleaved pairs (llama.cpp's "llama")."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def rope_factors(cfg: Any) -> np.ndarray:
    """Llama 3's frequency scaling as llama.cpp's per-frequency divisors (rope_freqs)."""
    import numpy as np

    s, d = cfg.rope_scaling, cfg.head_dim or cfg.emb_dim // cfg.n_heads
    freqs = 1.0 / (cfg.rope_base ** (np.arange(0, d, 2, dtype=np.float64) / d))
    low, high = (
        s.original_context_length / s.low_freq_factor,
        s.original_context_length / s.high_freq_factor,
    )
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high:
            out.append(1.0)
        elif wavelen > low:
            out.append(s.factor)
        else:
            smooth = (s.original_context_length / wavelen - s.low_freq_factor) / (
                s.high_freq_factor - s.low_freq_factor
            )
            out.append(1 / ((1 - smooth) / s.factor + smooth))
    return np.asarray(out, np.float32)


def llama_tensors(gguf: Any, model: Any) -> dict[str, np.ndarray]:
    """A Llama 3.x / Qwen3 model's weights under llama.cpp's names, float32, (out, in)."""
    from scratchgpt.weights.hf.llama import hf_state_dict

    cfg = model.cfg
    arch = {"llama3": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3}[cfg.family]
    names = gguf.get_tensor_name_map(arch, cfg.n_layers)
    n_kv = cfg.n_kv_groups or cfg.n_heads
    out = {}
    for name, t in hf_state_dict(model).items():
        arr = t.float().numpy()
        if cfg.family == "llama3" and name.endswith("q_proj.weight"):
            arr = _permute(arr, cfg.n_heads)
        elif cfg.family == "llama3" and name.endswith("k_proj.weight"):
            arr = _permute(arr, n_kv)
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConfigError(f"GGUF export: no llama.cpp name for tensor {name!r}")
        out[new] = arr
    if cfg.family == "llama3" and cfg.rope_scaling is not None:
        out["rope_freqs.weight"] = rope_factors(cfg)
    return out


def add_llama_keys(writer: Any, cfg: Any) -> None:
    """The hyperparameters llama.cpp's "llama" / "qwen3" graphs read."""
    head_dim = cfg.head_dim or cfg.emb_dim // cfg.n_heads
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim or 4 * cfg.emb_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_groups or cfg.n_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(cfg.rope_base)
    writer.add_layer_norm_rms_eps(cfg.ln_eps)


def hf_vocab(tokenizer: Any, vocab_size: int, family: str) -> dict[str, Any]:
    """A Hugging Face byte-level BPE tokenizer (tokenizer.json) the way llama.cpp reads it."""
    data = tokenizer.to_dict()["tokenizer"]
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ConfigError(
            f"GGUF export needs a byte-level BPE tokenizer; this tokenizer.json's model is "
            f"{model.get('type')!r}"
        )
    n = tokenizer.vocab_size
    if n > vocab_size:
        raise ConfigError(
            f"the tokenizer has {n} tokens but the model's embedding only {vocab_size} rows; "
            "they do not belong together"
        )
    special = set(tokenizer.special_tokens.values())
    tokens, types = [], []
    for i in range(vocab_size):
        try:
            token = tokenizer.id_to_token(i) if i < n else None
        except Exception:  # a hole in the ids
            token = None
        tokens.append(token if token is not None else f"[PAD{i}]")
        types.append(
            TOKEN_UNUSED if token is None else TOKEN_CONTROL if i in special else TOKEN_NORMAL
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    bos, stops = tokenizer.bos_ids, tokenizer.stop_ids
    return {
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "pre": PRE_TOKENIZER.get(family, "default"),
        "bos": bos[0] if bos else None,
        "eos": stops[0] if stops else None,
        "add_bos": bool(bos),
        "pad": tokenizer.pad_id,
        "chat_template": tokenizer.chat_template,
    }


def add_vocab(writer: Any, vocab: Mapping[str, Any]) -> None:
    """The tokenizer keys (byte-level BPE, llama.cpp's "gpt2" tokenizer model)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    if vocab.get("bos") is not None:
        writer.add_bos_token_id(vocab["bos"])
    if vocab.get("eos") is not None:
        writer.add_eos_token_id(vocab["eos"])
    if vocab.get("pad") is not None:
        writer.add_pad_token_id(vocab["pad"])
    writer.add_add_bos_token(bool(vocab.get("add_bos")))
    if vocab.get("chat_template"):
        writer.add_chat_template(vocab["chat_template"])
