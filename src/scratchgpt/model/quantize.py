"""Weight-only int8 quantization of the linear layers, for fast CPU inference.

Batch-1 decoding reads every weight once per token, so its speed is bytes per token over memory
bandwidth: int8 weights are a quarter of fp32's bytes. Each ``nn.Linear`` of the transformer
blocks and the output head becomes an :class:`Int8Linear`: its weight rounded to int8 with one
scale per output channel (symmetric, ``scale = max|w_row| / 127``), activations staying in the
model's float dtype. Embeddings, norms and a mixture of experts' router keep their precision.
A tied head gets its own int8 copy of the embedding table (the model's config then says
``tie_weights: false``).

The config records the scheme (``quantization: int8``), so a quantized checkpoint (int8 weights
and scales in safetensors) loads back as it was saved, without quantizing again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.errors import ConfigError
from scratchgpt.model.cpu_kernels import int8_matvec

SCHEMES = ("int8",)


def _has_int8_kernel() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def int8_linear(
    x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (scales[:, None] * weight).T + bias`` for int8 ``weight`` (out, in).

    On a CPU, a few input rows (decoding) go to the project's own kernel
    (:mod:`scratchgpt.model.cpu_kernels`), which reads the int8 weights directly for float32
    and bf16 inputs; without it, bf16 inputs use PyTorch's int8 kernel (``_weight_int8pack_mm``,
    fast for bf16 only). Otherwise (many rows: a prefill; other devices) the weight is
    dequantized for the call and the matmul is PyTorch's.
    """
    if x.device.type == "cpu":
        y = int8_matvec(x, weight, scales, bias)
        if y is not None:
            return y
        if x.dtype == scales.dtype == torch.bfloat16 and _has_int8_kernel():
            shape = x.shape
            y = torch.ops.aten._weight_int8pack_mm(
                x.reshape(-1, shape[-1]).contiguous(), weight, scales
            )
            y = y.reshape(*shape[:-1], weight.shape[0])
            return y if bias is None else y + bias
    return F.linear(x, (weight.to(scales.dtype) * scales[:, None]).to(x.dtype), bias)


class Int8Linear(nn.Module):
    """``y = x @ (scales * W_int8)^T + b``: int8 weights (out, in), float per-row scales.

    See :func:`int8_linear` for how it runs.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # Buffers, not parameters: integers take no gradient (a quantized model is for inference).
        self.register_buffer(
            "weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))
        self.bias: torch.Tensor | None
        if bias:
            self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device))
        else:
            self.bias = None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 version of ``linear`` (on its device; scales and bias in its dtype)."""
        w = linear.weight.detach()
        q = cls(
            linear.in_features, linear.out_features, linear.bias is not None,
            device=w.device, dtype=w.dtype,
        )  # fmt: skip
        if w.is_meta:
            return q  # shapes only: a checkpoint's tensors fill it
        w32 = w.float()
        scales = w32.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q.weight.copy_(torch.round(w32 / scales[:, None]).clamp_(-127, 127).to(torch.int8))
        q.scales.copy_(scales.to(w.dtype))
        if linear.bias is not None and q.bias is not None:
            q.bias.copy_(linear.bias.detach())
        return q

    def dequantized(self) -> torch.Tensor:
        """The float weight the int8 one stands for: ``scales[:, None] * weight``."""
        return self.weight.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.weight, self.scales, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_model(model: nn.Module, scheme: str = "int8") -> nn.Module:
    """Replace the linear layers of ``model``'s blocks and its output head by int8 ones, in
    place, and record the scheme in ``model.cfg``; returns ``model``. A model on the meta device
    gets empty int8 layers of the right shapes (a quantized checkpoint fills them)."""
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization {scheme!r}; choose one of {list(SCHEMES)}")
    cfg = model.cfg
    if cfg.lora is not None or any(type(m).__name__ == "LinearWithLoRA" for m in model.modules()):
        raise ConfigError(
            "the model has LoRA adapters; merge them into its weights before quantizing "
            "(scratchgpt.model.lora.merge_lora)"
        )
    for block in model.trf_blocks:
        _replace_linears(block)
    model.out_head = Int8Linear.from_linear(model.out_head)
    # The head now has its own (int8) copy of the table: it is no longer tied.
    model.cfg = cfg.replace(quantization=scheme, tie_weights=False)
    return model


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        # Exactly nn.Linear: a mixture of experts' router (a subclass) stays in float, since
        # rounding its scores could flip which experts a token goes to.
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear.from_linear(child))
        else:
            _replace_linears(child)
