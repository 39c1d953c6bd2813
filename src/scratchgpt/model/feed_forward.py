"""Gated feed-forwards: ``fc3(act(fc1(x)) * fc2(x))``. SwiGLU (silu gate) is Llama 3.x's and
Qwen3's, and the expert of a mixture of experts (model.moe); GeGLU (tanh-approximated GELU gate)
is Gemma 3's."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.model.inference import InferenceLinear, run_linears


class GatedFeedForward(nn.Module):
    """Gated feed-forward: ``fc3(act(fc1(x)) * fc2(x))`` (gate, up and down projections)."""

    activation: Callable[[torch.Tensor], torch.Tensor] = staticmethod(F.silu)

    def __init__(self, emb_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(emb_dim, hidden_dim, bias=False)  # gate
        self.fc2 = nn.Linear(emb_dim, hidden_dim, bias=False)  # up
        self.fc3 = nn.Linear(hidden_dim, emb_dim, bias=False)  # down
        # Inference-only fast paths (see fuse_projections); None until prepared.
        self.fast_gate_up: InferenceLinear | None = None
        self.fast_down: InferenceLinear | None = None

    def fuse_projections(self, *, column_major: bool = False, pack: bool = False) -> None:
        """Prepare inference without gradients: fc1 and fc2 run as one matmul, fc3 as its own
        (see :class:`~scratchgpt.model.inference.InferenceLinear`)."""
        self.fast_gate_up = InferenceLinear.make(
            (self.fc1, self.fc2), column_major=column_major, pack=pack
        )
        self.fast_down = InferenceLinear.make((self.fc3,), column_major=column_major, pack=pack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = run_linears(self.fast_gate_up, (self.fc1, self.fc2), x)
        return run_linears(self.fast_down, (self.fc3,), self.activation(gate) * up)[0]


class SwiGLUFeedForward(GatedFeedForward):
    """Llama 3.x / Qwen3: ``fc3(silu(fc1(x)) * fc2(x))``."""

    activation = staticmethod(F.silu)


class GeGLUFeedForward(GatedFeedForward):
    """Gemma 3: ``fc3(gelu_tanh(fc1(x)) * fc2(x))`` (GELU's tanh approximation, as GPT-2's)."""

    activation = staticmethod(functools.partial(F.gelu, approximate="tanh"))
