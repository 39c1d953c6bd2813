"""GPT-2 in Hugging Face's layout <-> scratchgpt's GPTModel (``model_type`` "gpt2").

Hugging Face stores GPT-2's linear layers as ``Conv1D`` with weights shaped (in, out), the
transpose of ``nn.Linear``'s (out, in), and the query/key/value projections as one fused
``c_attn`` (E, 3E) matrix; the mapping transposes and splits them (table in docs/weights.md).
OpenAI's TensorFlow names map one to one onto these (scratchgpt.weights.openai).

This file is the whole GPT-2 family: another family (Llama, Qwen3, Gemma) is another file like
it plus one entry in ``scratchgpt.weights.hf.FAMILIES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike
from scratchgpt.weights.hf.base import HFFamily, check_exportable, load_hf, save_hf
from scratchgpt.weights.native import unwrap_model
from scratchgpt.weights.tensors import TensorMap

if TYPE_CHECKING:
    import torch

    from scratchgpt.model import GPTModel

# GPT-2's "gelu_new" and PyTorch's tanh GELU are the same function (our GELU).
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
GPT2_EOT_ID = 50256


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


HF_SHAPE_KEYS = ("vocab_size", "n_embd", "n_head", "n_layer")


def config_from_hf(raw: Mapping[str, Any], source: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 config.json; unsupported options are refused."""
    if "model_type" not in raw:
        raise CheckpointError(
            f"{source}: not a Hugging Face config (it has no model_type); for a scratchgpt "
            "checkpoint use scratchgpt.load_model (or load_checkpoint)"
        )
    if raw.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{source}: model_type is {raw.get('model_type')!r}; scratchgpt reads GPT-2 models "
            "(model_type 'gpt2') and its own checkpoints"
        )
    act = raw.get("activation_function", "gelu_new")
    if act not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation_function {act!r} is not supported; scratchgpt's GPT uses the "
            f"tanh GELU ({' or '.join(SUPPORTED_ACTIVATIONS)})"
        )
    # The sizes must be in the file: transformers' defaults (GPT-2 small) would build a model
    # that does not match the weights.
    missing = [k for k in HF_SHAPE_KEYS if k not in raw]
    if "n_positions" not in raw and "n_ctx" not in raw:
        missing.append("n_positions")
    if missing:
        raise CheckpointError(
            f"{source}: missing field(s) {missing}; a GPT-2 config.json must give "
            f"{', '.join(HF_SHAPE_KEYS)} and n_positions (they fix the weights' shapes)"
        )
    n_embd = raw["n_embd"]
    n_inner = raw.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        raise CheckpointError(
            f"{source}: n_inner {n_inner} is not supported; scratchgpt's feed-forward layer is "
            f"4 * n_embd = {4 * n_embd} wide (set n_inner to null)"
        )
    unsupported = {
        "scale_attn_weights": (True, "attention scores are always scaled by 1/sqrt(head_dim)"),
        "scale_attn_by_inverse_layer_idx": (False, "no per-layer attention scaling"),
        "add_cross_attention": (False, "a decoder-only model has no cross-attention"),
    }
    for key, (want, why) in unsupported.items():
        if key in raw and bool(raw[key]) != want:
            raise CheckpointError(
                f"{source}: {key}={raw[key]!r} is not supported ({why}); it must be {want}"
            )
    context = raw["n_positions"] if "n_positions" in raw else raw["n_ctx"]
    fields = dict(
        vocab_size=raw["vocab_size"],
        context_length=context,
        emb_dim=n_embd,
        n_heads=raw["n_head"],
        n_layers=raw["n_layer"],
        drop_rate=float(raw.get("resid_pdrop", raw.get("embd_pdrop", 0.1))),
        qkv_bias=True,
        tie_weights=bool(raw.get("tie_word_embeddings", True)),
        attention="sdpa",
        init="gpt2",
        ln_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
    )
    return GPTConfig.from_dict(fields, source=source)


def hf_config_from_ours(cfg: GPTConfig, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A Hugging Face GPT-2 config.json for ``cfg``."""
    # GPT-2's end-of-text id only means something when the vocabulary reaches it.
    eot = GPT2_EOT_ID if cfg.vocab_size > GPT2_EOT_ID else None
    out: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,
        "layer_norm_epsilon": cfg.ln_eps,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
    }
    if dtype is not None:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out


# --------------------------------------------------------------------------------------------
# The key mapping
# --------------------------------------------------------------------------------------------


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.t()


def _cols_t(k: int, e: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Columns k*e..(k+1)*e of a fused (E, 3E) c_attn weight, as an (E, E) Linear weight."""
    return lambda x: x[:, k * e : (k + 1) * e].t()


def _part(k: int, e: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x[k * e : (k + 1) * e]


def hf_plan(cfg: GPTConfig, prefix: str = "transformer.") -> list[TensorMap]:
    """How each of our parameters is read from a Hugging Face GPT-2 state dict."""
    e, v, c = cfg.emb_dim, cfg.vocab_size, cfg.context_length
    p = prefix
    plan = [
        TensorMap("tok_emb.weight", f"{p}wte.weight", (v, e)),
        TensorMap("pos_emb.weight", f"{p}wpe.weight", (c, e)),
    ]
    for i in range(cfg.n_layers):
        h, b = f"{p}h.{i}.", f"trf_blocks.{i}."
        for k, name in enumerate(("W_query", "W_key", "W_value")):
            plan.append(
                TensorMap(
                    f"{b}att.{name}.weight", f"{h}attn.c_attn.weight", (e, 3 * e), _cols_t(k, e)
                )
            )
            if cfg.qkv_bias:
                plan.append(
                    TensorMap(f"{b}att.{name}.bias", f"{h}attn.c_attn.bias", (3 * e,), _part(k, e))
                )
        plan += [
            TensorMap(f"{b}att.out_proj.weight", f"{h}attn.c_proj.weight", (e, e), _t),
            TensorMap(f"{b}att.out_proj.bias", f"{h}attn.c_proj.bias", (e,)),
            TensorMap(f"{b}ff.layers.0.weight", f"{h}mlp.c_fc.weight", (e, 4 * e), _t),
            TensorMap(f"{b}ff.layers.0.bias", f"{h}mlp.c_fc.bias", (4 * e,)),
            TensorMap(f"{b}ff.layers.2.weight", f"{h}mlp.c_proj.weight", (4 * e, e), _t),
            TensorMap(f"{b}ff.layers.2.bias", f"{h}mlp.c_proj.bias", (e,)),
            TensorMap(f"{b}norm1.scale", f"{h}ln_1.weight", (e,)),
            TensorMap(f"{b}norm1.shift", f"{h}ln_1.bias", (e,)),
            TensorMap(f"{b}norm2.scale", f"{h}ln_2.weight", (e,)),
            TensorMap(f"{b}norm2.shift", f"{h}ln_2.bias", (e,)),
        ]
    plan += [
        TensorMap("final_norm.scale", f"{p}ln_f.weight", (e,)),
        TensorMap("final_norm.shift", f"{p}ln_f.bias", (e,)),
    ]
    if not cfg.tie_weights:
        plan.append(TensorMap("out_head.weight", "lm_head.weight", (v, e)))
    return plan


# HF's causal-mask buffers: older transformers versions saved them with the weights.
_HF_BUFFERS = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")


def _hf_ignore(cfg: GPTConfig) -> Callable[[str], bool]:
    # With tied embeddings transformers uses wte as the head whatever lm_head.weight holds.
    tied = cfg.tie_weights
    return lambda name: bool(_HF_BUFFERS.match(name)) or (tied and name == "lm_head.weight")


def hf_state_dict(model: Any, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """Our model's weights under Hugging Face GPT-2 names and layouts (new CPU tensors).

    Without qkv_bias the fused c_attn bias is written as zeros, which computes the same thing.
    """
    import torch

    gpt = unwrap_model(model)
    cfg = gpt.cfg
    check_exportable(cfg)
    p = prefix

    def c(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to("cpu").contiguous()

    out = {f"{p}wte.weight": c(gpt.tok_emb.weight), f"{p}wpe.weight": c(gpt.pos_emb.weight)}
    for i, block in enumerate(gpt.trf_blocks):
        h, att = f"{p}h.{i}.", block.att
        qkv = (att.W_query, att.W_key, att.W_value)
        out[f"{h}attn.c_attn.weight"] = c(torch.cat([lin.weight.t() for lin in qkv], dim=1))
        if cfg.qkv_bias:
            out[f"{h}attn.c_attn.bias"] = c(torch.cat([lin.bias for lin in qkv]))
        else:
            w = att.W_query.weight
            out[f"{h}attn.c_attn.bias"] = torch.zeros(3 * cfg.emb_dim, dtype=w.dtype)
        out[f"{h}attn.c_proj.weight"] = c(att.out_proj.weight.t())
        out[f"{h}attn.c_proj.bias"] = c(att.out_proj.bias)
        out[f"{h}mlp.c_fc.weight"] = c(block.ff.layers[0].weight.t())
        out[f"{h}mlp.c_fc.bias"] = c(block.ff.layers[0].bias)
        out[f"{h}mlp.c_proj.weight"] = c(block.ff.layers[2].weight.t())
        out[f"{h}mlp.c_proj.bias"] = c(block.ff.layers[2].bias)
        out[f"{h}ln_1.weight"] = c(block.norm1.scale)
        out[f"{h}ln_1.bias"] = c(block.norm1.shift)
        out[f"{h}ln_2.weight"] = c(block.norm2.scale)
        out[f"{h}ln_2.bias"] = c(block.norm2.shift)
    out[f"{p}ln_f.weight"] = c(gpt.final_norm.scale)
    out[f"{p}ln_f.bias"] = c(gpt.final_norm.shift)
    if not cfg.tie_weights:
        out["lm_head.weight"] = c(gpt.out_head.weight)
    return out


def _plan_for_files(cfg: GPTConfig, names: Sequence[str]) -> list[TensorMap]:
    # The hub's own gpt2 files have no "transformer." prefix; save_pretrained writes one.
    prefix = "transformer." if any(n.startswith("transformer.") for n in names) else ""
    return hf_plan(cfg, prefix)


FAMILY = HFFamily(
    model_type="gpt2",
    tokenizer="gpt2",
    config_from_hf=config_from_hf,
    hf_config=hf_config_from_ours,
    plan=_plan_for_files,
    ignore=_hf_ignore,
    state_dict=hf_state_dict,
)


def load_hf_gpt2(
    path: PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> GPTModel:
    """A GPTModel from a Hugging Face GPT-2 folder (or its model.safetensors file with
    config.json beside it), in eval mode. Keys may carry the ``transformer.`` prefix or not."""
    return load_hf(FAMILY, path, device=device, dtype=dtype)


def save_hf_gpt2(model: Any, dir: PathLike, *, overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors that ``transformers.GPT2LMHeadModel.from_pretrained``
    loads as is (atomic folder write; an existing folder needs ``overwrite=True``)."""
    return save_hf(FAMILY, model, dir, overwrite=overwrite)
