"""Model configuration: the book's GPT_CONFIG fields plus what a real model needs, and presets.

A config is a frozen dataclass validated on construction and saved beside every checkpoint as
JSON, so a folder always says which model its weights belong to. It describes the whole
architecture: the model family (GPT-2, Llama 3.x, Qwen3), a classification head (``num_classes``)
and LoRA adapters (``lora``) included, so ``build_model(cfg)`` builds exactly the model whose
weights a checkpoint holds. One config type carries every family: the fields the book's bonus
chapters add for Llama and Qwen3 (``hidden_dim``, ``n_kv_groups``, ``head_dim``, ``rope_base``,
``rope_scaling``, ``qk_norm``) are simply unused by GPT-2 and left out of its config.json, and
the mixture-of-experts fields of Qwen3-MoE (``num_experts`` ...) are left out of a dense model's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Re-exported: the nested settings are part of this module's public API.
from scratchgpt.config_sections import (  # noqa: F401
    LORA_ALIASES,
    LORA_PROJECTIONS,
    LORA_TARGETS,
    LoRAConfig,
    RopeScaling,
    canonical_lora_targets,
)
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_json, read_json
from scratchgpt.model_presets import PRESETS

AttentionImpl = Literal["sdpa", "explicit"]
InitScheme = Literal["pytorch", "gpt2"]
# gpt2: learned positions, LayerNorm, GELU MLP, multi-head attention (the book's chapters 2-7).
# llama3: RoPE (with Llama 3's frequency scaling), RMSNorm, SwiGLU, grouped-query attention.
# qwen3: llama3 plus RMSNorm on each head's queries and keys (QK-norm).
# gemma3: qwen3's attention with local (sliding-window) and global layers, four RMSNorms per
# block scaling by 1 + weight, a GELU-gated feed-forward (GeGLU) and embeddings scaled by
# sqrt(emb_dim).
Family = Literal["gpt2", "llama3", "qwen3", "gemma3"]
FAMILIES = ("gpt2", "llama3", "qwen3", "gemma3")
# What each layer of a model with sliding windows is (Hugging Face's layer_types spellings).
LAYER_TYPES = ("sliding_attention", "full_attention")
# The Llama/Qwen3 fields: None means "derived" (see head_size, kv_heads, ff_dim).
_FAMILY_OPTIONAL = ("hidden_dim", "n_kv_groups", "head_dim", "rope_scaling")
_FAMILY_FIELDS = ("family", *_FAMILY_OPTIONAL, "rope_base", "qk_norm")
# Sliding-window attention and Gemma 3's attention settings; a config without them leaves
# them all out of its config.json (None / empty: not used).
_WINDOW_FIELDS = (
    "sliding_window", "layer_types", "rope_local_base", "query_pre_attn_scalar", "final_softcap",
)  # fmt: skip

# Qwen3-MoE's mixture-of-experts fields; a dense model's config.json leaves them all out.
_MOE_FIELDS = (
    "num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
    "decoder_sparse_step", "mlp_only_layers",
)  # fmt: skip

# Fields a saved config must give: they fix every weight's shape, so a default would build a
# model that does not match the file (or, worse, silently does for the wrong reason).
SHAPE_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


@dataclass(frozen=True)
class GPTConfig:
    """Hyperparameters of a GPT model (field names follow the book's GPT_CONFIG_124M)."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    # Share the token-embedding matrix with the output head, as GPT-2 does. The book keeps them
    # separate (163M parameters instead of 124M), so the default is False.
    tie_weights: bool = False
    # "explicit": the book's scores -> mask -> softmax -> dropout -> weights @ values, the code to
    # read. "sdpa": torch's fused scaled_dot_product_attention, same maths, faster.
    attention: AttentionImpl = "sdpa"
    # "pytorch": PyTorch's default layer initialisation in the book's module order (reproduces the
    # book's printed outputs). "gpt2": normal(0, 0.02), residual projections scaled by
    # 1/sqrt(2 * n_layers), zero biases (GPT-2 / nanoGPT), better for pretraining.
    init: InitScheme = "pytorch"
    ln_eps: float = 1e-5
    # A classifier: the output head maps to this many classes (with a bias) instead of the
    # vocabulary (the book's chapter 6). None: a language model.
    num_classes: int | None = None
    # LoRA adapters on the chosen Linear layers (appendix E). None: plain Linear layers.
    lora: LoRAConfig | None = None
    # --- Llama 3.x / Qwen3 (the book's bonus chapters; GPT-2 leaves them at their defaults) ---
    family: Family = "gpt2"
    # Feed-forward width (None: 4 * emb_dim, GPT-2's).
    hidden_dim: int | None = None
    # Key/value heads of grouped-query attention; each serves n_heads // n_kv_groups query heads
    # (Hugging Face's num_key_value_heads). None: n_heads, plain multi-head attention.
    n_kv_groups: int | None = None
    # Width of one attention head (None: emb_dim // n_heads; Qwen3 sets it on its own).
    head_dim: int | None = None
    rope_base: float = 10000.0  # RoPE's theta
    rope_scaling: RopeScaling | None = None  # Llama 3's frequency scaling
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (Qwen3)
    # --- Sliding-window attention (Gemma 3; None: every layer sees the whole context) ---
    # Keys a local layer's query sees: itself and the sliding_window - 1 before it.
    sliding_window: int | None = None
    # Per layer "sliding_attention" (local, windowed) or "full_attention" (global); empty with
    # a window: every layer is local. Gemma 3 alternates 5 local layers and 1 global.
    layer_types: tuple[str, ...] = ()
    # RoPE's theta in local layers (None: rope_base, which the global layers use).
    rope_local_base: float | None = None
    # Attention scores are scaled by 1/sqrt(query_pre_attn_scalar) (None: 1/sqrt(head_dim)).
    query_pre_attn_scalar: int | None = None
    # Soft-capping of the final logits, cap * tanh(logits / cap) (None: off; Gemma 3's config
    # has the field, its released models leave it off).
    final_softcap: float | None = None
    # --- Mixture of experts (Qwen3-MoE; None: a dense model) ---
    # Experts per MoE layer, and how many of them each token is routed to (top-k).
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None  # width of one expert's SwiGLU
    norm_topk_prob: bool = True  # renormalise the top-k router weights to sum to 1
    # Layer i is a MoE layer when (i + 1) % decoder_sparse_step == 0 and i is not in
    # mlp_only_layers; the others keep a dense SwiGLU of hidden_dim (Hugging Face's names).
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    # Weight-only quantization of the blocks' linear layers and the head ("int8"): the stored
    # weights are int8 with per-channel scales (scratchgpt.model.quantize). None: float weights.
    quantization: Literal["int8"] | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.head_dim is None and self.emb_dim % self.n_heads:
            raise ConfigError(
                f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): "
                "each head gets emb_dim // n_heads dimensions"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate!r}")
        if self.attention not in ("sdpa", "explicit"):
            raise ConfigError(
                f"GPTConfig.attention must be 'sdpa' or 'explicit', got {self.attention!r}"
            )
        if self.init not in ("pytorch", "gpt2"):
            raise ConfigError(f"GPTConfig.init must be 'pytorch' or 'gpt2', got {self.init!r}")
        if not self.ln_eps > 0:
            raise ConfigError(f"GPTConfig.ln_eps must be > 0, got {self.ln_eps!r}")
        self._check_family()
        self._check_windows()
        self._check_moe()
        self._check_heads()
        if self.quantization not in (None, "int8"):
            raise ConfigError(
                f"GPTConfig.quantization must be 'int8' or null, got {self.quantization!r}"
            )

    def _check_family(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"GPTConfig.family must be one of {list(FAMILIES)}, got {self.family!r}"
            )
        for name in ("hidden_dim", "n_kv_groups", "head_dim"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(
                    f"GPTConfig.{name} must be a positive integer or null, got {value!r}"
                )
        if self.n_heads % self.kv_heads:
            raise ConfigError(
                f"GPTConfig.n_heads ({self.n_heads}) must be a multiple of n_kv_groups "
                f"({self.n_kv_groups}): each key/value head serves the same number of query heads"
            )
        if isinstance(self.rope_scaling, Mapping):
            scaling = RopeScaling.from_dict(self.rope_scaling, "GPTConfig.rope_scaling")
            object.__setattr__(self, "rope_scaling", scaling)
        if isinstance(self.rope_base, bool) or not isinstance(self.rope_base, (int, float)):
            raise ConfigError(f"GPTConfig.rope_base must be a number, got {self.rope_base!r}")
        if not self.rope_base > 0:
            raise ConfigError(f"GPTConfig.rope_base must be > 0, got {self.rope_base!r}")
        object.__setattr__(self, "rope_base", float(self.rope_base))
        if self.head_size % 2 and self.family != "gpt2":
            raise ConfigError(f"GPTConfig: RoPE needs an even head_dim, got {self.head_size}")
        if self.family == "gpt2":
            # GPT-2's blocks have none of these; a value here would be silently ignored.
            extra = [
                name
                for name, value in (
                    ("hidden_dim", self.hidden_dim not in (None, 4 * self.emb_dim)),
                    ("n_kv_groups", self.n_kv_groups not in (None, self.n_heads)),
                    ("head_dim", self.head_dim not in (None, self.emb_dim // self.n_heads)),
                    ("rope_scaling", self.rope_scaling is not None),
                    ("qk_norm", bool(self.qk_norm)),
                )
                if value
            ]
            if extra:
                raise ConfigError(
                    f"GPTConfig: {', '.join(extra)} belong to the llama3/qwen3/gemma3 families; "
                    "GPT-2 (family 'gpt2') has learned positions, a 4x GELU MLP and one key/value "
                    "head per query head. Set family to 'llama3', 'qwen3' or 'gemma3', or drop them"
                )

    def _check_windows(self) -> None:
        types = self.layer_types
        types = (types,) if isinstance(types, str) else tuple(types)
        object.__setattr__(self, "layer_types", types)  # a JSON list -> a tuple
        for name in ("sliding_window", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(
                    f"GPTConfig.{name} must be a positive integer or null, got {value!r}"
                )
        w = self.sliding_window
        for name in ("rope_local_base", "final_softcap"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"GPTConfig.{name} must be a number > 0 or null, got {value!r}")
            object.__setattr__(self, name, float(value))
        if types and w is None:
            raise ConfigError(
                "GPTConfig.layer_types needs sliding_window: it says which layers use it"
            )
        if types and len(types) != self.n_layers:
            raise ConfigError(
                f"GPTConfig.layer_types has {len(types)} entries; the model has {self.n_layers} "
                "layers (one entry each)"
            )
        bad = sorted({t for t in types if t not in LAYER_TYPES})
        if bad:
            raise ConfigError(f"GPTConfig.layer_types: {bad} are not one of {list(LAYER_TYPES)}")
        if self.family != "gemma3":
            extra = [name for name in _WINDOW_FIELDS if getattr(self, name) not in (None, ())]
            if extra:
                raise ConfigError(
                    f"GPTConfig: {', '.join(extra)} belong to the gemma3 family; a "
                    f"{self.family} model attends over its whole context with 1/sqrt(head_dim)"
                )

    def window(self, layer: int) -> int | None:
        """Keys a query of block ``layer`` sees (its sliding window), or None for a global
        layer that sees every earlier position."""
        if self.sliding_window is None:
            return None
        if self.layer_types and self.layer_types[layer] == "full_attention":
            return None
        return self.sliding_window

    def _check_moe(self) -> None:
        layers = self.mlp_only_layers
        layers = (layers,) if isinstance(layers, int) else tuple(layers)
        object.__setattr__(self, "mlp_only_layers", layers)  # a JSON list -> a tuple
        if self.num_experts is None:
            extra = [
                name
                for name, value in (
                    ("num_experts_per_tok", self.num_experts_per_tok is not None),
                    ("moe_intermediate_size", self.moe_intermediate_size is not None),
                    ("decoder_sparse_step", self.decoder_sparse_step != 1),
                    ("mlp_only_layers", bool(layers)),
                )
                if value
            ]
            if extra:
                raise ConfigError(
                    f"GPTConfig: {', '.join(extra)} describe mixture-of-experts layers; set "
                    "num_experts too, or drop them"
                )
            return
        if self.family != "qwen3":
            raise ConfigError(
                f"GPTConfig: mixture-of-experts layers (num_experts) belong to the qwen3 family "
                f"(Qwen3-MoE), not {self.family!r}"
            )
        for name in ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                     "decoder_sparse_step"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"GPTConfig.{name} must be a positive integer with num_experts set, "
                    f"got {value!r}"
                )
        if self.num_experts_per_tok > self.num_experts:
            raise ConfigError(
                f"GPTConfig.num_experts_per_tok ({self.num_experts_per_tok}) must be at most "
                f"num_experts ({self.num_experts})"
            )
        if not isinstance(self.norm_topk_prob, bool):
            raise ConfigError(
                f"GPTConfig.norm_topk_prob must be true or false, got {self.norm_topk_prob!r}"
            )
        bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < self.n_layers]
        if bad:
            raise ConfigError(
                f"GPTConfig.mlp_only_layers: {bad} are not layer indices 0..{self.n_layers - 1}"
            )

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` (0-based) has a mixture of experts instead of a dense
        feed-forward (Qwen3-MoE's rule: every ``decoder_sparse_step``-th, minus
        ``mlp_only_layers``)."""
        return (
            self.num_experts is not None
            and layer not in self.mlp_only_layers
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    def _check_heads(self) -> None:
        n = self.num_classes
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2):
            raise ConfigError(f"GPTConfig.num_classes must be an integer >= 2 or null, got {n!r}")
        if n is not None and self.tie_weights:
            raise ConfigError(
                "GPTConfig: a classifier head (num_classes) cannot be tied to the token "
                "embeddings; set tie_weights to false"
            )
        if isinstance(self.lora, Mapping):
            object.__setattr__(self, "lora", LoRAConfig.from_dict(self.lora, "GPTConfig.lora"))
        elif self.lora is not None and not isinstance(self.lora, LoRAConfig):
            raise ConfigError(f"GPTConfig.lora must be a LoRAConfig or null, got {self.lora!r}")
        if self.lora is not None and self.tie_weights and "head" in self.lora.targets:
            # The tied head is the embedding table: adapting it would store it under two names.
            raise ConfigError(
                "GPTConfig: LoRA cannot adapt a head tied to the token embeddings; drop 'head' "
                "from lora.targets or set tie_weights to false"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head (``head_dim`` when set, else emb_dim // n_heads)."""
        return self.head_dim if self.head_dim is not None else self.emb_dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``n_kv_groups`` when set, else one per query head)."""
        return self.n_kv_groups if self.n_kv_groups is not None else self.n_heads

    @property
    def ff_dim(self) -> int:
        """Feed-forward width (``hidden_dim`` when set, else GPT-2's 4 * emb_dim)."""
        return self.hidden_dim if self.hidden_dim is not None else 4 * self.emb_dim

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. Optional fields appear only when set, and a GPT-2 config leaves out
        the other families' fields, so a GPT-2 model's config.json is what it always was."""
        d = dataclasses.asdict(self)
        for key in ("num_classes", "lora", "quantization", *_FAMILY_OPTIONAL):
            if d[key] is None:
                del d[key]
        if self.family == "gpt2":
            for key in _FAMILY_FIELDS:
                d.pop(key, None)
        if self.num_experts is None:
            for key in _MOE_FIELDS:
                del d[key]
        else:
            d["mlp_only_layers"] = list(self.mlp_only_layers)
        for key in _WINDOW_FIELDS:
            if d[key] in (None, ()):
                del d[key]
        if self.layer_types:
            d["layer_types"] = list(self.layer_types)
        if self.lora is not None:
            d["lora"] = self.lora.to_dict()
        if self.rope_scaling is not None:
            d["rope_scaling"] = self.rope_scaling.to_dict()
        return d

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], source: str = "config", *, required: Sequence[str] = ()
    ) -> GPTConfig:
        """Build from a dict; unknown keys are an error naming them (typos must not pass silently),
        and so is a missing ``required`` field (a file must not fall back to GPT-2's sizes)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object with GPTConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown GPTConfig field(s) {unknown}; known fields: {sorted(known)}"
            )
        missing = [name for name in required if name not in d]
        if missing:
            raise ConfigError(
                f"{source}: missing field(s) {missing}; a model config must give "
                f"{', '.join(required)} (they fix the weights' shapes)"
            )
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def save(self, path: PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: PathLike) -> GPTConfig:
        """Read a config.json; the fields that fix the weights' shapes must be in it."""
        return cls.from_dict(read_json(path), source=str(path), required=SHAPE_FIELDS)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named preset (see :data:`scratchgpt.model_presets.PRESETS`), optionally with some
        fields changed."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls.from_dict({**base, **overrides}, source=f"preset {name!r}")


# The book's own GPT_CONFIG_124M, for readers who follow along.
GPT_CONFIG_124M = GPTConfig.from_preset("gpt2-small", attention="explicit")
