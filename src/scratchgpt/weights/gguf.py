"""GGUF export: one file that llama.cpp (and Ollama, which runs on it) loads and runs.

GPT-2 is written here; Llama 3.x and Qwen3 in :mod:`scratchgpt.weights.gguf_llama`.

A GGUF file holds key/value metadata (the architecture's hyperparameters, the tokenizer) and the
tensors under llama.cpp's names. We follow what llama.cpp's own ``convert_hf_to_gguf.py`` writes
for GPT-2 ("gpt2" architecture): the query/key/value projections fused into one
``blk.N.attn_qkv`` matrix, every matrix in ``nn.Linear``'s (out, in) layout, and the
tokenizer's byte-level BPE tokens and merges. The ``gguf`` package (the llama.cpp project's own
writer) does the file format and the q8_0 / bf16 packing.

Types: ``f32``; ``f16`` / ``bf16`` (matrices in that type); ``q8_0`` (matrices in blocks of 32
int8 values with one fp16 scale each). Biases, norms and the position embedding stay f32 in
every type, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.errors import CheckpointError, ConfigError
from scratchgpt.fileio import PathLike, atomic_path
from scratchgpt.weights.gguf_llama import (
    GGUF_ARCH,
    add_llama_keys,
    add_vocab,
    hf_vocab,
    llama_tensors,
)
from scratchgpt.weights.native import unwrap_model

if TYPE_CHECKING:
    import numpy as np
    import torch

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp's token types (llama_token_type).
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5
# llama.cpp's converter keeps these in f32 whatever the file type.
_F32_ALWAYS = ("position_embd.weight",)


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as e:  # an optional extra
        raise ConfigError(
            "GGUF export needs the 'gguf' package; install it with "
            "`pip install 'scratchgpt[gguf]'` (or `pip install gguf`)"
        ) from e
    return gguf


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").float().contiguous().numpy()


def gpt2_tensors(model: Any) -> dict[str, np.ndarray]:
    """A GPT-2 model's weights under llama.cpp's "gpt2" names, as float32 arrays in the
    (out, in) layout GGUF stores (its reader shows them as (in, out))."""
    import numpy as np
    import torch

    cfg = model.cfg
    out: dict[str, np.ndarray] = {
        "token_embd.weight": _np(model.tok_emb.weight),
        "position_embd.weight": _np(model.pos_emb.weight),
        "output_norm.weight": _np(model.final_norm.scale),
        "output_norm.bias": _np(model.final_norm.shift),
    }
    if not cfg.tie_weights:  # llama.cpp reuses token_embd when "output" is absent
        out["output.weight"] = _np(model.out_head.weight)
    for i, blk in enumerate(model.trf_blocks):
        att, p = blk.att, f"blk.{i}."
        projs = (att.W_query, att.W_key, att.W_value)
        out[p + "attn_norm.weight"] = _np(blk.norm1.scale)
        out[p + "attn_norm.bias"] = _np(blk.norm1.shift)
        out[p + "attn_qkv.weight"] = _np(torch.cat([w.weight for w in projs], 0))
        # llama.cpp's gpt2 graph needs the fused bias; zeros where the model has none.
        out[p + "attn_qkv.bias"] = (
            _np(torch.cat([w.bias for w in projs], 0))
            if att.W_query.bias is not None
            else np.zeros(3 * cfg.emb_dim, np.float32)
        )
        out[p + "attn_output.weight"] = _np(att.out_proj.weight)
        out[p + "attn_output.bias"] = _np(att.out_proj.bias)
        out[p + "ffn_norm.weight"] = _np(blk.norm2.scale)
        out[p + "ffn_norm.bias"] = _np(blk.norm2.shift)
        up, down = blk.ff.layers[0], blk.ff.layers[2]
        out[p + "ffn_up.weight"] = _np(up.weight)
        out[p + "ffn_up.bias"] = _np(up.bias)
        out[p + "ffn_down.weight"] = _np(down.weight)
        out[p + "ffn_down.bias"] = _np(down.bias)
    return out


def gpt2_vocab(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """GPT-2's byte-level BPE vocabulary the way llama.cpp reads it: tokens spelled as in
    encoder.json, their types, and the merges as "a b" strings. Rows of the embedding past
    the tokenizer's vocabulary (a padded vocabulary) become unused "[PAD<i>]" tokens."""
    files = getattr(tokenizer, "files", None)
    if files is None or not hasattr(tokenizer, "id_to_token"):
        raise ConfigError(
            f"GGUF export of a GPT-2 model needs GPT-2's tokenizer (encoder.json / vocab.bpe), "
            f"not {type(tokenizer).__name__}; export a model that uses the gpt2 tokenizer"
        )
    n = tokenizer.vocab_size
    if n > vocab_size:
        raise ConfigError(
            f"the tokenizer has {n} tokens but the model's embedding only {vocab_size} rows; "
            "they do not belong together"
        )
    special = set(tokenizer.special_tokens.values())
    tokens = [tokenizer.id_to_token(i) for i in range(n)]
    types = [TOKEN_CONTROL if i in special else TOKEN_NORMAL for i in range(n)]
    tokens += [f"[PAD{i}]" for i in range(n, vocab_size)]
    types += [TOKEN_UNUSED] * (vocab_size - n)
    eot = tokenizer.eot_id
    return {
        "tokens": tokens,
        "types": types,
        "merges": [f"{a} {b}" for a, b in files.merges],
        "pre": "gpt-2",  # GPT-2's pre-tokenizer regex
        "bos": eot,
        "eos": eot,
        "add_bos": False,  # GPT-2 prompts start with no BOS, as ours do
    }


def _check_model(model: Any) -> Any:
    model = unwrap_model(model)
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ConfigError(f"save_gguf needs a scratchgpt model, not {type(model).__name__}")
    if cfg.num_classes is not None:
        raise CheckpointError(
            f"the model has a classifier head ({cfg.num_classes} classes); GGUF export holds "
            "a language model (llama.cpp runs text generation only)"
        )
    if cfg.lora is not None:
        raise CheckpointError(
            "the model has unmerged LoRA adapters; merge them into its weights first "
            "(scratchgpt.model.lora.merge_lora, or export through `scratchgpt export`, "
            "which merges them)"
        )
    if cfg.quantization is not None:
        raise CheckpointError(
            f"the model's weights are {cfg.quantization}-quantized; export the float checkpoint "
            "(GGUF's own q8_0 type quantizes it: --type q8_0)"
        )
    kind = "a mixture-of-experts model" if cfg.num_experts is not None else repr(cfg.family)
    if cfg.family not in ("gpt2", *GGUF_ARCH) or cfg.num_experts is not None:
        raise ConfigError(
            f"GGUF export supports gpt2, llama3 and dense qwen3 models, not {kind}; export "
            "it with --format hf and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    return model


def _tensor_type(gguf: Any, name: str, arr: np.ndarray, type: str) -> Any:
    q = gguf.GGMLQuantizationType
    if arr.ndim < 2 or name in _F32_ALWAYS or type == "f32":
        return q.F32
    if type == "q8_0" and arr.shape[-1] % 32:
        return q.F16  # q8_0 blocks need rows a multiple of 32 long (llama.cpp does the same)
    return {"f16": q.F16, "bf16": q.BF16, "q8_0": q.Q8_0}[type]


def _add_tensors(writer: Any, gguf: Any, tensors: Mapping[str, np.ndarray], type: str) -> None:
    for name, arr in tensors.items():
        qtype = _tensor_type(gguf, name, arr, type)
        data = gguf.quants.quantize(arr, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)


def _add_gpt2_keys(writer: Any, cfg: Any) -> None:
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_feed_forward_length(cfg.hidden_dim or 4 * cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_layer_norm_eps(cfg.ln_eps)


def _vocab(tokenizer: Any, cfg: Any) -> dict[str, Any]:
    if hasattr(tokenizer, "files"):  # GPT-2's encoder.json / vocab.bpe
        return gpt2_vocab(tokenizer, cfg.vocab_size)
    if hasattr(tokenizer, "chat_template") and hasattr(tokenizer, "to_dict"):  # tokenizer.json
        return hf_vocab(tokenizer, cfg.vocab_size, cfg.family)
    raise ConfigError(
        f"GGUF export needs GPT-2's tokenizer or a Hugging Face tokenizer.json (byte-level "
        f"BPE), not {type(tokenizer).__name__}"
    )


def save_gguf(
    model: Any,
    tokenizer: Any,
    path: PathLike,
    *,
    type: str = "f16",
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its ``tokenizer`` as one GGUF file that llama.cpp loads.

    ``type``: ``f32``, ``f16``, ``bf16`` or ``q8_0`` for the weight matrices. ``metadata``:
    optional ``name`` (general.name). The file is written to a temporary name and renamed, so
    ``path`` never holds half a file; an existing ``path`` is replaced only with
    ``overwrite=True``. Refuses classifiers and models with unmerged LoRA adapters.
    """
    if type not in GGUF_TYPES:
        raise ConfigError(f"unknown GGUF type {type!r}; choose one of {', '.join(GGUF_TYPES)}")
    model = _check_model(model)
    gguf = _gguf()
    cfg = model.cfg
    vocab = _vocab(tokenizer, cfg)
    llama = cfg.family in GGUF_ARCH
    tensors = llama_tensors(gguf, model) if llama else gpt2_tensors(model)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[type]
    dest = Path(path)
    with atomic_path(dest, overwrite=overwrite) as tmp:
        writer = gguf.GGUFWriter(tmp, GGUF_ARCH.get(cfg.family, "gpt2"))
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(str((metadata or {}).get("name") or dest.stem))
            (add_llama_keys if llama else _add_gpt2_keys)(writer, cfg)
            writer.add_file_type(file_type)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            add_vocab(writer, vocab)
            _add_tensors(writer, gguf, tensors, type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()  # also on an error: atomic_path then deletes the temporary file
    return dest
