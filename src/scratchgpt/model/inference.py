"""Inference-only fast paths for linear layers (``nn.Linear`` and int8 ``Int8Linear``),
prepared by ``scratchgpt.generation.optimize_for_decoding`` and used by every model family.

Batch-1 decoding reads every weight once per token, so its speed is the speed of one-row matrix
products. Three things make those faster on a CPU, none of them changing a value:

- fusing: layers that read the same input (query/key/value, gate/up) become one matmul over a
  weight that holds their rows; each layer's weight becomes a view of it, so nothing is stored
  twice and the Parameter objects, shapes and the state dict stay the same;
- layout: fp32 weights stored (in, out) and viewed transposed, which MKL's matrix-vector kernel
  reads faster than nn.Linear's (out, in);
- packing: bf16 weights also kept in oneDNN's blocked layout (``torch.ops.mkldnn``), whose
  one-row kernel streams them much faster than the plain layout's. This is a second copy of the
  weight, made only when asked (``pack=True``); it is as fast or faster for longer inputs too
  (a prefill), so every input uses it.

Int8 layers (:mod:`scratchgpt.model.quantize`) are fused the same way (their int8 weights,
scales and biases side by side), which also gives the int8 kernel fewer, larger products.

Training is untouched: a fast path is used only without gradients and only while every layer
still holds the tensors it was prepared from (same storage, no in-place change since); otherwise
the owner runs its layers one by one, as the readable code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.model.cpu_kernels import bf16_matvec
from scratchgpt.model.quantize import Int8Linear, int8_linear

# The layer types a fast path can stand for.
FUSABLE = (nn.Linear, Int8Linear)


def _nothing() -> None:
    return None


def can_pack() -> bool:
    """Whether this PyTorch has oneDNN's packed linear kernels (used for bf16 on CPUs)."""
    mkldnn = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
    )


class InferenceLinear:
    """One or more linear layers (all ``nn.Linear`` or all ``Int8Linear``) with the same input,
    run as one matmul (see the module docstring). Calling it returns each layer's output, in
    order."""

    def __init__(
        self, linears: Sequence[nn.Module], *, column_major: bool = False, pack: bool = False
    ) -> None:
        with torch.no_grad():
            single = len(linears) == 1
            weight = _joined(linears, "weight")  # (sum of out, in)
            bias = _joined(linears, "bias")
            scales = _joined(linears, "scales")  # int8 layers only
            relaid = column_major and scales is None and weight.is_contiguous()
            if relaid:
                weight = weight.t().contiguous().t()
            self.sizes = [m.weight.shape[0] for m in linears]
            if relaid or not single:  # each layer's tensors become views of the joined ones
                start = 0
                for m, n in zip(linears, self.sizes):
                    for name, joined in (("weight", weight), ("bias", bias), ("scales", scales)):
                        if joined is not None and (name == "weight" or not single):
                            getattr(m, name).data = joined[start : start + n]
                    start += n
            self.packed = None
            if pack and weight.dtype == torch.bfloat16 and weight.device.type == "cpu":
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 1)
        self.weight, self.bias, self.scales = weight, bias, scales
        self._type = type(linears[0])
        self._state = self._fingerprint(linears)

    @classmethod
    def make(
        cls, linears: Sequence[nn.Module], *, column_major: bool = False, pack: bool = False
    ) -> InferenceLinear | None:
        """The fast path of ``linears``, or None when there is none: not all plain nn.Linear or
        all Int8Linear layers (LoRA wraps them), or mixed dtypes/devices, or weights not
        materialised."""
        kinds = {type(m) for m in linears}
        if len(kinds) != 1 or kinds.pop() not in FUSABLE:
            return None
        ws = [m.weight for m in linears]
        same = {(w.dtype, w.device, getattr(m, "scales", w).dtype) for m, w in zip(linears, ws)}
        has_bias = {m.bias is not None for m in linears}
        if len(same) != 1 or len(has_bias) != 1 or ws[0].is_meta:
            return None
        return cls(linears, column_major=column_major, pack=pack)

    @staticmethod
    def _fingerprint(linears: Sequence[nn.Module]) -> list[tuple[int, int]]:
        """(address, version counter) of every weight and bias: a replaced tensor has another
        address (the fast path keeps the old memory alive, so it cannot be reused), an in-place
        change a new version."""
        out = []
        for m in linears:
            for t in (
                getattr(m, "weight", None),
                getattr(m, "bias", None),
                getattr(m, "scales", None),
            ):
                if isinstance(t, torch.Tensor):
                    out.append((t.data_ptr(), t._version))
                else:
                    out.append((-1, -1))
        return out

    def usable(self, linears: Sequence[nn.Module]) -> bool:
        """True when no gradient is needed and ``linears`` are still what was prepared."""
        return (
            not torch.is_grad_enabled()
            and all(type(m) is self._type for m in linears)
            and self._fingerprint(linears) == self._state
        )

    # A copy or a pickle of the model leaves its fast paths out (they would not match the
    # copy's tensors, and a packed weight cannot be copied): prepare the copy again.
    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple:
        return (_nothing, ())

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.scales is not None:
            y = int8_linear(x, self.weight, self.scales, self.bias)
        else:
            # A bf16 decoding step: the project's kernel (cpu_kernels), where it runs.
            y = bf16_matvec(x, self.weight, self.bias)
            if y is None and self.packed is not None:
                y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            elif y is None:
                y = F.linear(x, self.weight, self.bias)
        if len(self.sizes) == 1:
            return (y,)
        return y.split(self.sizes, dim=-1)


def _joined(linears: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    """The layers' tensors ``name`` (weight, bias or scales) stacked along the output dimension
    (the tensor itself for a single layer), or None when they have none."""
    tensors = [getattr(m, name, None) for m in linears]
    if any(t is None for t in tensors):
        return None
    if len(tensors) == 1:
        return tensors[0].detach()
    return torch.cat([t.detach() for t in tensors])


def run_linears(
    fast: InferenceLinear | None, linears: Sequence[nn.Module], x: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Each of ``linears`` applied to ``x``: through their fast path when it is prepared and
    still usable, otherwise layer by layer (training, LoRA, layers changed since)."""
    if fast is not None and fast.usable(linears):
        return fast(x)
    return tuple(m(x) for m in linears)
