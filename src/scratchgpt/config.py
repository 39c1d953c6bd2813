"""Model configuration: the book's GPT_CONFIG fields plus what a real model needs, and presets.

A config is a frozen dataclass validated on construction and saved beside every checkpoint as
JSON, so a folder always says which model its weights belong to. It describes the whole
architecture: a classification head (``num_classes``) and LoRA adapters (``lora``) included, so
``GPTModel(cfg)`` builds exactly the model whose weights a checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_json, read_json

AttentionImpl = Literal["sdpa", "explicit"]
InitScheme = Literal["pytorch", "gpt2"]
# Which nn.Linear layers LoRA may adapt: the attention projections, the feed-forward layers and
# the output head.
LORA_TARGETS = ("attention", "feed_forward", "head")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (the book's appendix E): rank, alpha and the layer groups they adapt."""

    rank: int
    alpha: float = 16.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ConfigError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ConfigError(f"LoRA alpha must be a number, got {self.alpha!r}")
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        targets = tuple(dict.fromkeys(targets))
        bad = [t for t in targets if t not in LORA_TARGETS]
        if bad or not targets:
            raise ConfigError(f"LoRA targets {list(targets)}: choose from {list(LORA_TARGETS)}")
        # A list from JSON becomes a tuple: the config stays hashable and compares equal.
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "alpha", float(self.alpha))

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> LoRAConfig:
        """Build from ``{"rank", "alpha", "targets"}``; unknown keys are an error."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: lora must be an object with rank, alpha and targets")
        unknown = sorted(set(d) - {"rank", "alpha", "targets"})
        if unknown or "rank" not in d:
            raise ConfigError(
                f"{source}: lora needs rank (and optionally alpha, targets); got {sorted(d)}"
            )
        return cls(**d)


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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads:
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
        self._check_heads()

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
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. ``num_classes`` and ``lora`` appear only when set, so a plain
        language model's config.json is what it always was."""
        d = dataclasses.asdict(self)
        for key in ("num_classes", "lora"):
            if d[key] is None:
                del d[key]
        if self.lora is not None:
            d["lora"] = self.lora.to_dict()
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
        """A named preset (see PRESETS), optionally with some fields changed."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls.from_dict({**base, **overrides}, source=f"preset {name!r}")


# The four GPT-2 sizes use the book's settings (qkv_bias False, untied head, dropout 0.1), so
# `info --preset gpt2-small` reproduces the book's parameter counts. Loading OpenAI's weights sets
# qkv_bias=True and tie_weights=True, as the released models have.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": dict(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": dict(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": dict(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
    # Small models for CPU work: "mini" pretrains on The Verdict in minutes on a laptop.
    "mini": dict(
        context_length=256, emb_dim=256, n_layers=4, n_heads=4, tie_weights=True, init="gpt2"
    ),
    # Tests: a few hundred thousand non-embedding parameters.
    "tiny": dict(context_length=64, emb_dim=32, n_layers=2, n_heads=4, drop_rate=0.0),
}

# The book's own GPT_CONFIG_124M, for readers who follow along.
GPT_CONFIG_124M = GPTConfig.from_preset("gpt2-small", attention="explicit")
