"""Gemma 3 text models (``model_type`` "gemma3_text", ``Gemma3ForCausalLM``: gemma-3-270m,
gemma-3-1b) in Hugging Face's layout <-> our Gemma3Model.

Like Llama's, the mapping is a rename (no transposes): every projection is an ``nn.Linear``
weight (out, in), RoPE uses the same half-split rotation, and Gemma's RMSNorm stores its scale
as an offset from 1 on both sides. A config.json may give the RoPE settings the transformers-5
way (``rope_parameters`` per layer type) or the older way (``rope_theta`` for global layers,
``rope_local_base_freq`` for local ones); we write the older way, which every transformers
version with Gemma 3 reads. The layer pattern comes from ``layer_types`` or, in older files,
``sliding_window_pattern`` (every N-th layer global). ``attn_logit_softcapping`` is read as
transformers' Gemma 3 reads it: not at all (its attention never applies it; Gemma 2's did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scratchgpt.config import GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.model_presets import gemma3_layer_types
from scratchgpt.weights.hf.base import HFFamily, renamed_state_dict
from scratchgpt.weights.hf.llama import hf_ignore, plan_prefix
from scratchgpt.weights.tensors import TensorMap

if TYPE_CHECKING:
    import torch

MODEL_TYPE = "gemma3_text"
HF_SHAPE_KEYS = (
    "vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
    "max_position_embeddings",
)  # fmt: skip
# transformers' Gemma3TextConfig defaults, for keys a config.json leaves out.
DEFAULTS = dict(
    head_dim=256, query_pre_attn_scalar=256, sliding_window=4096, rms_norm_eps=1e-6,
    rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, tie_word_embeddings=True,
)  # fmt: skip


def _rope_bases(raw: Mapping[str, Any], source: str) -> tuple[float, float]:
    """(global theta, local theta) from either spelling; scaled RoPE is refused."""
    params = raw.get("rope_parameters")
    if isinstance(params, Mapping) and "full_attention" in params:
        full = params.get("full_attention") or {}
        local = params.get("sliding_attention") or {}
    else:
        full = dict(raw.get("rope_scaling") or {})
        full.setdefault("rope_theta", raw.get("rope_theta", DEFAULTS["rope_theta"]))
        local = {"rope_theta": raw.get("rope_local_base_freq", DEFAULTS["rope_local_base_freq"])}
    for name, p in (("full_attention", full), ("sliding_attention", local)):
        kind = p.get("rope_type", p.get("type")) or "default"
        if kind != "default":
            raise CheckpointError(
                f"{source}: RoPE scaling of type {kind!r} ({name} layers) is not supported; "
                "scratchgpt reads Gemma 3 text models with the default RoPE (270m, 1b)"
            )
    return (
        float(full.get("rope_theta", DEFAULTS["rope_theta"])),
        float(local.get("rope_theta", DEFAULTS["rope_local_base_freq"])),
    )


def _layer_types(raw: Mapping[str, Any], n_layers: int, source: str) -> list[str]:
    types = raw.get("layer_types")
    if types is None:
        return gemma3_layer_types(n_layers, int(raw.get("sliding_window_pattern", 6)))
    if not isinstance(types, list) or len(types) != n_layers:
        raise CheckpointError(
            f"{source}: layer_types must list one type per layer ({n_layers}), got {types!r}"
        )
    return types


def _refuse(raw: Mapping[str, Any], source: str) -> None:
    act = raw.get("hidden_activation", raw.get("hidden_act", "gelu_pytorch_tanh"))
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise CheckpointError(
            f"{source}: hidden_activation {act!r} is not supported; Gemma 3's GeGLU uses "
            "gelu_pytorch_tanh"
        )
    if raw.get("attention_bias"):
        raise CheckpointError(f"{source}: attention_bias=true is not supported; Gemma 3 has none")
    if raw.get("use_bidirectional_attention"):
        raise CheckpointError(
            f"{source}: use_bidirectional_attention=true (an embedding model) is not supported; "
            "scratchgpt builds causal language models"
        )


def config_from_hf(raw: Mapping[str, Any], source: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Hugging Face Gemma 3 text config.json."""
    if raw.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{source}: model_type is {raw.get('model_type')!r}, not {MODEL_TYPE!r}"
        )
    missing = [k for k in HF_SHAPE_KEYS if k not in raw]
    if missing:
        raise CheckpointError(
            f"{source}: missing field(s) {missing}; a {MODEL_TYPE} config.json must give "
            f"{', '.join(HF_SHAPE_KEYS)} (they fix the weights' shapes)"
        )
    _refuse(raw, source)
    raw = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k.endswith("capping")}}
    global_base, local_base = _rope_bases(raw, source)
    n = raw["num_hidden_layers"]
    fields = dict(
        family="gemma3",
        vocab_size=raw["vocab_size"],
        context_length=raw["max_position_embeddings"],
        emb_dim=raw["hidden_size"],
        n_heads=raw["num_attention_heads"],
        n_layers=n,
        hidden_dim=raw["intermediate_size"],
        n_kv_groups=raw.get("num_key_value_heads") or raw["num_attention_heads"],
        head_dim=raw["head_dim"],
        rope_base=global_base,
        rope_local_base=local_base,
        sliding_window=raw["sliding_window"],
        layer_types=_layer_types(raw, n, source),
        query_pre_attn_scalar=raw["query_pre_attn_scalar"],
        final_softcap=raw.get("final_logit_softcapping"),
        qk_norm=True,
        drop_rate=float(raw.get("attention_dropout") or 0.0),
        qkv_bias=False,
        tie_weights=bool(raw["tie_word_embeddings"]),
        ln_eps=float(raw["rms_norm_eps"]),
        attention="sdpa",
        init="gpt2",
    )
    return GPTConfig.from_dict(fields, source=source)


def hf_config_from_ours(cfg: GPTConfig, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """A Hugging Face config.json (Gemma3ForCausalLM) for a gemma3 ``cfg``."""
    if cfg.family != "gemma3":
        raise CheckpointError(f"family {cfg.family!r} is not exported as Gemma 3")
    if cfg.rope_scaling is not None:
        raise CheckpointError("a Gemma 3 export holds the default RoPE; this model scales it")
    out: dict[str, Any] = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": MODEL_TYPE,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "hidden_size": cfg.emb_dim,
        "intermediate_size": cfg.ff_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_size,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": cfg.ln_eps,
        "rope_theta": cfg.rope_base,
        "rope_local_base_freq": (
            cfg.rope_base if cfg.rope_local_base is None else cfg.rope_local_base
        ),
        "rope_scaling": None,
        "sliding_window": cfg.sliding_window,
        "layer_types": [
            "full_attention" if cfg.window(i) is None else "sliding_attention"
            for i in range(cfg.n_layers)
        ],
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.head_size,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": cfg.final_softcap,
        "attention_bias": False,
        "attention_dropout": cfg.drop_rate,
        "tie_word_embeddings": cfg.tie_weights,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if cfg.sliding_window is None:  # a model without windows: every layer global
        out["sliding_window"] = cfg.context_length
    if dtype is not None:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out


_LAYER_NAMES = (
    ("att.W_query.weight", "self_attn.q_proj.weight"),
    ("att.W_key.weight", "self_attn.k_proj.weight"),
    ("att.W_value.weight", "self_attn.v_proj.weight"),
    ("att.out_proj.weight", "self_attn.o_proj.weight"),
    ("att.q_norm.scale", "self_attn.q_norm.weight"),
    ("att.k_norm.scale", "self_attn.k_norm.weight"),
    ("ff.fc1.weight", "mlp.gate_proj.weight"),
    ("ff.fc2.weight", "mlp.up_proj.weight"),
    ("ff.fc3.weight", "mlp.down_proj.weight"),
    ("input_layernorm.scale", "input_layernorm.weight"),
    ("post_attention_layernorm.scale", "post_attention_layernorm.weight"),
    ("pre_feedforward_layernorm.scale", "pre_feedforward_layernorm.weight"),
    ("post_feedforward_layernorm.scale", "post_feedforward_layernorm.weight"),
)


def _layer_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    e, f, hd = cfg.emb_dim, cfg.ff_dim, cfg.head_size
    q, kv = cfg.n_heads * hd, cfg.kv_heads * hd
    return {
        "att.W_query.weight": (q, e), "att.W_key.weight": (kv, e), "att.W_value.weight": (kv, e),
        "att.out_proj.weight": (e, q), "att.q_norm.scale": (hd,), "att.k_norm.scale": (hd,),
        "ff.fc1.weight": (f, e), "ff.fc2.weight": (f, e), "ff.fc3.weight": (e, f),
        "input_layernorm.scale": (e,), "post_attention_layernorm.scale": (e,),
        "pre_feedforward_layernorm.scale": (e,), "post_feedforward_layernorm.scale": (e,),
    }  # fmt: skip


def hf_plan(cfg: GPTConfig, prefix: str = "model.") -> list[TensorMap]:
    """How each of our parameters is read from a Hugging Face Gemma 3 state dict."""
    e, v = cfg.emb_dim, cfg.vocab_size
    shapes = _layer_shapes(cfg)
    plan = [TensorMap("tok_emb.weight", f"{prefix}embed_tokens.weight", (v, e))]
    for i in range(cfg.n_layers):
        plan += [
            TensorMap(f"trf_blocks.{i}.{ours}", f"{prefix}layers.{i}.{theirs}", shapes[ours])
            for ours, theirs in _LAYER_NAMES
        ]
    plan.append(TensorMap("final_norm.scale", f"{prefix}norm.weight", (e,)))
    if not cfg.tie_weights:
        plan.append(TensorMap("out_head.weight", "lm_head.weight", (v, e)))
    return plan


def hf_state_dict(model: Any, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Our model's weights under Hugging Face Gemma 3 names (new CPU tensors)."""
    return renamed_state_dict(model, hf_plan, prefix)


def _plan_for_files(cfg: GPTConfig, names: Sequence[str]) -> list[TensorMap]:
    return hf_plan(cfg, plan_prefix(names))


GEMMA3 = HFFamily(
    model_type=MODEL_TYPE,
    tokenizer=None,
    config_from_hf=config_from_hf,
    hf_config=hf_config_from_ours,
    plan=_plan_for_files,
    ignore=hf_ignore,
    state_dict=hf_state_dict,
)
