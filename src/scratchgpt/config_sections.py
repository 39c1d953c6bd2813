"""The nested settings a :class:`~scratchgpt.config.GPTConfig` holds: LoRA adapters
(:class:`LoRAConfig`) and Llama 3's RoPE frequency scaling (:class:`RopeScaling`), each a frozen,
validated dataclass that reads and writes its own JSON object. ``scratchgpt.config`` re-exports
them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scratchgpt.errors import ConfigError

# Which nn.Linear layers LoRA adapts by default: the attention projections, the feed-forward
# layers and the output head (the book's appendix E adapts them all).
LORA_TARGETS = ("attention", "feed_forward", "head")
# Single projections, for recipes that adapt some (e.g. q and v only): attention's query, key,
# value and output projections; the feed-forward's gate (SwiGLU only), up and down projections.
LORA_PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
# Hugging Face's spellings (peft's target_modules) of the same projections.
LORA_ALIASES = {f"{p}_proj": p for p in LORA_PROJECTIONS}


def canonical_lora_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Targets without repeats, Hugging Face spellings (q_proj ...) as ours (q ...); a
    ConfigError names the valid ones."""
    out = tuple(dict.fromkeys(LORA_ALIASES.get(t, t) for t in targets))
    bad = [t for t in out if t not in LORA_TARGETS + LORA_PROJECTIONS]
    if bad or not out:
        raise ConfigError(
            f"LoRA targets {list(targets)}: choose from {list(LORA_TARGETS)} (layer groups) or "
            f"{list(LORA_PROJECTIONS)} (single projections; q_proj ... also accepted)"
        )
    return out


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
        targets = canonical_lora_targets(targets)
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


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's RoPE frequency scaling (Hugging Face ``rope_scaling`` of type ``llama3``):
    wavelengths longer than ``original_context_length / low_freq_factor`` are stretched by
    ``factor``, shorter than ``original_context_length / high_freq_factor`` kept, and those in
    between blended, so a model trained at 8k positions reads 128k."""

    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context_length: int = 8192

    def __post_init__(self) -> None:
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"rope_scaling.{name} must be a number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError(
                f"rope_scaling.high_freq_factor ({self.high_freq_factor}) must be greater than "
                f"low_freq_factor ({self.low_freq_factor})"
            )
        n = self.original_context_length
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(
                f"rope_scaling.original_context_length must be a positive integer, got {n!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> RopeScaling:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: rope_scaling must be an object with factor, ...")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or "factor" not in d:
            raise ConfigError(
                f"{source}: rope_scaling needs factor (and optionally {sorted(known - {'factor'})}); "
                f"got {sorted(d)}"
            )
        return cls(**d)
