"""Sampling: how one next token is picked from the last position's logits.

One step runs in the book's order:

    top-k filter -> temperature scaling -> softmax -> top-p (nucleus) filter -> sample

(``temperature == 0`` is greedy: argmax). :class:`SamplingConfig` holds those options and the
source of randomness (a ``seed`` or a ``torch.Generator``; neither means torch's global RNG, as
the book), checked once when it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from scratchgpt.errors import ConfigError

__all__ = ["SamplingConfig", "sample_next_token"]


def is_int(x: Any) -> bool:
    """An int that is not a bool (``True`` is not a token id or a count)."""
    return isinstance(x, int) and not isinstance(x, bool)


# Temperatures below this are greedy: logits / 1e-6 stays finite for any logit float32 can hold
# in practice (|logit| < 1e32), so above it the sampling maths is safe.
GREEDY_BELOW = 1e-6
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class SamplingConfig:
    """How each next token is chosen: greedy when ``temperature`` is 0 (or below
    ``GREEDY_BELOW``), else sampled after the ``top_k`` and ``top_p`` filters (None: no limit). ``seed`` (a fresh generator per run) or
    ``generator`` make the run reproducible; with neither, torch's global RNG is used."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"temperature must be a number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if k is not None and (not is_int(k) or k < 1):
            raise ConfigError(f"top_k must be an integer >= 1 (or None for no limit), got {k!r}")
        p = self.top_p
        if p is not None and (
            isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0
        ):
            raise ConfigError(f"top_p must be in (0, 1] (or None for no limit), got {p!r}")
        if self.seed is not None and self.generator is not None:
            raise ConfigError("pass either seed or generator, not both")
        if self.seed is not None and not is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """Whether every step takes the argmax (no randomness involved)."""
        return self.temperature < GREEDY_BELOW

    def make_generator(self, device: torch.device) -> torch.Generator | None:
        """The generator one run draws from: a fresh one seeded with ``seed``, else
        ``generator`` (None: torch's global RNG)."""
        if self.seed is not None:
            return torch.Generator(device=device).manual_seed(self.seed)
        return self.generator


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V), in the book's order: top-k,
    temperature, softmax, then top-p; greedy (argmax) when ``temperature`` is 0 (or below
    ``GREEDY_BELOW``)."""
    logits = logits.float()  # bf16 logits would make softmax/cumsum coarse
    if temperature < GREEDY_BELOW:
        # top-k and top-p never change the argmax, so greedy ignores them. A positive temperature
        # this small is greedy too: dividing by it would overflow float32 (or, below float32's
        # range, divide by zero) and give softmax nothing but inf and nan.
        return logits.argmax(dim=-1)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # A temperature beyond float32's range would become inf, and -inf (a top-k cut) / inf is nan.
    probs = torch.softmax(logits / min(temperature, _FLOAT32_MAX), dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep a token while the mass before it is < top_p: the smallest set reaching top_p,
        # and always the most likely token.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        # A top_p below float32's range rounds to 0 and would drop even the most likely token.
        drop[..., 0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def sampling_from(
    sampling: SamplingConfig | None,
    *,
    temperature: Any = 0.0,
    top_k: Any = None,
    top_p: Any = None,
    seed: Any = None,
    generator: Any = None,
) -> SamplingConfig:
    """The SamplingConfig of a public call: ``sampling`` itself, or one built from the separate
    keyword arguments (which must then be left at their defaults)."""
    if sampling is None:
        return SamplingConfig(temperature, top_k, top_p, seed, generator)
    if not isinstance(sampling, SamplingConfig):
        raise ConfigError(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
    given = [
        name
        for name, value, default in (
            ("temperature", temperature, 0.0),
            ("top_k", top_k, None),
            ("top_p", top_p, None),
            ("seed", seed, None),
            ("generator", generator, None),
        )
        if value is not default and value != default
    ]
    if given:
        raise ConfigError(
            f"pass sampling options either as sampling= or as keywords, not both (got "
            f"sampling= and {', '.join(given)})"
        )
    return sampling
