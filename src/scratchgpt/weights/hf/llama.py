"""Llama 3.x (``model_type`` "llama"), Qwen3 ("qwen3") and Qwen3-MoE ("qwen3_moe") in Hugging
Face's layout <-> our LlamaModel.

Both families store every projection as an ``nn.Linear`` weight (out, in), as we do, and rotate
queries/keys with the same half-split RoPE convention, so the mapping is a rename: no transposes,
no splits, no permutations (table in docs/weights.md). Qwen3 adds ``q_norm``/``k_norm`` per
layer; Qwen3-MoE's sparse layers hold a router (``mlp.gate``) and experts
(``mlp.experts.N.{gate,up,down}_proj``), our ``ff.gate`` and ``ff.experts.N.fc{1,2,3}``. A
config.json may give RoPE settings the transformers-5 way (``rope_parameters``) or the
older way (``rope_theta`` + ``rope_scaling``), as the published models do; we write the older
way, which every transformers version reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig, RopeScaling
from scratchgpt.errors import CheckpointError
from scratchgpt.weights.hf.base import HFFamily, renamed_state_dict
from scratchgpt.weights.tensors import TensorMap

if TYPE_CHECKING:
    import torch

# Hugging Face model_type -> our family, and back.
OUR_FAMILY = {"llama": "llama3", "qwen3": "qwen3", "qwen3_moe": "qwen3"}
HF_ARCHITECTURE = {
    "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
}  # fmt: skip
HF_MODEL_TYPE = {"llama3": "llama", "qwen3": "qwen3"}
# What a qwen3_moe config.json must add (num_experts may be spelled num_local_experts).
HF_MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size")


def hf_model_type(cfg: GPTConfig) -> str:
    """The Hugging Face model_type a config exports as (qwen3_moe for Qwen3 with experts)."""
    if cfg.family not in HF_MODEL_TYPE:
        raise CheckpointError(f"family {cfg.family!r} is not exported as Llama or Qwen3")
    return "qwen3_moe" if cfg.num_experts is not None else HF_MODEL_TYPE[cfg.family]


def _moe_fields(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Our mixture-of-experts fields from a qwen3_moe config.json."""
    raw = {"num_experts": raw.get("num_local_experts"), **raw}
    missing = [k for k in HF_MOE_KEYS if raw.get(k) is None]
    if missing:
        raise CheckpointError(
            f"{source}: missing field(s) {missing}; a qwen3_moe config.json must give "
            f"{', '.join(HF_MOE_KEYS)}"
        )
    return dict(
        num_experts=raw["num_experts"],
        num_experts_per_tok=raw["num_experts_per_tok"],
        moe_intermediate_size=raw["moe_intermediate_size"],
        # transformers' default when the file says nothing (the published models say true).
        norm_topk_prob=bool(raw.get("norm_topk_prob", False)),
        decoder_sparse_step=raw.get("decoder_sparse_step", 1),
        mlp_only_layers=list(raw.get("mlp_only_layers") or []),
    )


HF_SHAPE_KEYS = (
    "vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
    "max_position_embeddings",
)  # fmt: skip


def _rope_settings(raw: Mapping[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """(rope_base, llama3 scaling or None) from either spelling of the RoPE settings."""
    params = raw.get("rope_parameters")
    if not isinstance(params, Mapping):
        params = dict(raw.get("rope_scaling") or {})
        params.setdefault("rope_theta", raw.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type")) or "default"
    base = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    if rope_type == "default":
        return base, None
    if rope_type != "llama3":
        raise CheckpointError(
            f"{source}: RoPE scaling of type {rope_type!r} is not supported; scratchgpt reads "
            "the default RoPE and Llama 3's scaling (rope_type 'llama3')"
        )
    try:
        scaling = RopeScaling(
            factor=params["factor"],
            low_freq_factor=params.get("low_freq_factor", 1.0),
            high_freq_factor=params.get("high_freq_factor", 4.0),
            original_context_length=params["original_max_position_embeddings"],
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: rope scaling of type 'llama3' has no {e}") from None
    return base, scaling


def _refuse(raw: Mapping[str, Any], source: str) -> None:
    """Options the published models do not use and our blocks do not build."""
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(
            f"{source}: hidden_act {raw['hidden_act']!r} is not supported; the SwiGLU "
            "feed-forward uses silu"
        )
    for key in ("attention_bias", "mlp_bias"):
        if raw.get(key):
            raise CheckpointError(
                f"{source}: {key}=true is not supported; Llama 3.x and Qwen3 have no biases"
            )
    window = raw.get("sliding_window")
    if raw.get("use_sliding_window") and window and window < raw["max_position_embeddings"]:
        raise CheckpointError(
            f"{source}: sliding-window attention ({window} tokens) is not supported; set "
            "use_sliding_window to false"
        )


def config_from_hf(raw: Mapping[str, Any], source: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Hugging Face Llama or Qwen3 config.json."""
    family = OUR_FAMILY.get(raw.get("model_type"))  # type: ignore[arg-type]
    if family is None:
        raise CheckpointError(
            f"{source}: model_type is {raw.get('model_type')!r}, not 'llama', 'qwen3' or "
            "'qwen3_moe'"
        )
    missing = [k for k in HF_SHAPE_KEYS if k not in raw]
    if missing:
        raise CheckpointError(
            f"{source}: missing field(s) {missing}; a {raw['model_type']} config.json must give "
            f"{', '.join(HF_SHAPE_KEYS)} (they fix the weights' shapes)"
        )
    _refuse(raw, source)
    base, scaling = _rope_settings(raw, source)
    e, h = raw["hidden_size"], raw["num_attention_heads"]
    head_dim = raw.get("head_dim") or e // h
    fields = dict(
        family=family,
        vocab_size=raw["vocab_size"],
        context_length=raw["max_position_embeddings"],
        emb_dim=e,
        n_heads=h,
        n_layers=raw["num_hidden_layers"],
        hidden_dim=raw["intermediate_size"],
        n_kv_groups=raw.get("num_key_value_heads") or h,
        head_dim=head_dim,
        rope_base=base,
        rope_scaling=scaling,
        qk_norm=family == "qwen3",
        drop_rate=float(raw.get("attention_dropout", 0.0)),
        qkv_bias=False,
        tie_weights=bool(raw.get("tie_word_embeddings", False)),
        ln_eps=float(raw.get("rms_norm_eps", 1e-6)),
        attention="sdpa",
        init="gpt2",
    )
    if raw["model_type"] == "qwen3_moe":
        fields.update(_moe_fields(raw, source))
    return GPTConfig.from_dict(fields, source=source)


def hf_config_from_ours(cfg: GPTConfig, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A Hugging Face config.json for a llama3 or qwen3 (dense or MoE) ``cfg``."""
    model_type = hf_model_type(cfg)
    out: dict[str, Any] = {
        "architectures": [HF_ARCHITECTURE[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "hidden_size": cfg.emb_dim,
        "intermediate_size": cfg.ff_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.ln_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": cfg.drop_rate,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_weights,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_context_length,
        }
    if cfg.family == "qwen3":
        out.update(use_sliding_window=False, sliding_window=None)
    if cfg.num_experts is not None:
        out.update(
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=cfg.decoder_sparse_step,
            mlp_only_layers=list(cfg.mlp_only_layers),
            output_router_logits=False,
        )
    if dtype is not None:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out


_SWIGLU = (("fc1", "gate_proj"), ("fc2", "up_proj"), ("fc3", "down_proj"))


def _layer_names(cfg: GPTConfig, layer: int = 0) -> list[tuple[str, str]]:
    """(our name, Hugging Face name) of layer ``layer``'s tensors, relative to the layer."""
    names = [
        ("att.W_query.weight", "self_attn.q_proj.weight"),
        ("att.W_key.weight", "self_attn.k_proj.weight"),
        ("att.W_value.weight", "self_attn.v_proj.weight"),
        ("att.out_proj.weight", "self_attn.o_proj.weight"),
    ]
    if cfg.is_moe_layer(layer):
        names.append(("ff.gate.weight", "mlp.gate.weight"))
        names += [
            (f"ff.experts.{n}.{ours}.weight", f"mlp.experts.{n}.{theirs}.weight")
            for n in range(cfg.num_experts or 0)
            for ours, theirs in _SWIGLU
        ]
    else:
        names += [(f"ff.{ours}.weight", f"mlp.{theirs}.weight") for ours, theirs in _SWIGLU]
    names += [
        ("norm1.scale", "input_layernorm.weight"),
        ("norm2.scale", "post_attention_layernorm.weight"),
    ]
    if cfg.qk_norm:
        names += [("att.q_norm.scale", "self_attn.q_norm.weight"),
                  ("att.k_norm.scale", "self_attn.k_norm.weight")]  # fmt: skip
    return names


def _layer_shapes(cfg: GPTConfig, layer: int = 0) -> dict[str, tuple[int, ...]]:
    e, f, hd = cfg.emb_dim, cfg.ff_dim, cfg.head_size
    q, kv = cfg.n_heads * hd, cfg.kv_heads * hd
    shapes = {
        "att.W_query.weight": (q, e), "att.W_key.weight": (kv, e), "att.W_value.weight": (kv, e),
        "att.out_proj.weight": (e, q), "ff.fc1.weight": (f, e), "ff.fc2.weight": (f, e),
        "ff.fc3.weight": (e, f), "norm1.scale": (e,), "norm2.scale": (e,),
        "att.q_norm.scale": (hd,), "att.k_norm.scale": (hd,),
    }  # fmt: skip
    if cfg.is_moe_layer(layer):
        m, n = cfg.moe_intermediate_size or 0, cfg.num_experts or 0
        shapes["ff.gate.weight"] = (n, e)
        for i in range(n):
            shapes.update({f"ff.experts.{i}.fc1.weight": (m, e),
                           f"ff.experts.{i}.fc2.weight": (m, e),
                           f"ff.experts.{i}.fc3.weight": (e, m)})  # fmt: skip
    return shapes


def hf_plan(cfg: GPTConfig, prefix: str = "model.") -> list[TensorMap]:
    """How each of our parameters is read from a Hugging Face Llama/Qwen3 state dict."""
    e, v = cfg.emb_dim, cfg.vocab_size
    plan = [TensorMap("tok_emb.weight", f"{prefix}embed_tokens.weight", (v, e))]
    for i in range(cfg.n_layers):
        shapes = _layer_shapes(cfg, i)
        for ours, theirs in _layer_names(cfg, i):
            plan.append(
                TensorMap(f"trf_blocks.{i}.{ours}", f"{prefix}layers.{i}.{theirs}", shapes[ours])
            )
    plan.append(TensorMap("final_norm.scale", f"{prefix}norm.weight", (e,)))
    if not cfg.tie_weights:
        plan.append(TensorMap("out_head.weight", "lm_head.weight", (v, e)))
    return plan


# Older checkpoints saved RoPE's frequencies as buffers.
_HF_BUFFERS = re.compile(r"^(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


def hf_ignore(cfg: GPTConfig) -> Callable[[str], bool]:
    """Tensors of a Llama-style folder that are not weights we read: old RoPE buffers, and
    the head of a model whose head is its embedding table."""
    tied = cfg.tie_weights
    return lambda name: bool(_HF_BUFFERS.match(name)) or (tied and name == "lm_head.weight")


def hf_state_dict(model: Any, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Our model's weights under Hugging Face Llama/Qwen3 names (new CPU tensors)."""
    return renamed_state_dict(model, hf_plan, prefix)


def plan_prefix(names: Sequence[str]) -> str:
    """The prefix of the decoder's tensors in a folder ("model." from a ...ForCausalLM)."""
    return "model." if any(n.startswith("model.") for n in names) else ""


def _plan_for_files(cfg: GPTConfig, names: Sequence[str]) -> list[TensorMap]:
    return hf_plan(cfg, plan_prefix(names))


def _family(model_type: str) -> HFFamily:
    return HFFamily(
        model_type=model_type,
        tokenizer=None,
        config_from_hf=config_from_hf,
        hf_config=hf_config_from_ours,
        plan=_plan_for_files,
        ignore=hf_ignore,
        state_dict=hf_state_dict,
    )


LLAMA = _family("llama")
QWEN3 = _family("qwen3")
QWEN3_MOE = _family("qwen3_moe")
