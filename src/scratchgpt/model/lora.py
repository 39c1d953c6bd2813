"""LoRA, low-rank adaptation (the book's appendix E).

A frozen ``nn.Linear`` computing ``x W^T + b`` gets a trainable low-rank update:
``x W^T + b + (alpha / rank) * x A B`` with A (in x r, Kaiming-uniform) and B (r x out, zeros),
so at initialisation the adapted model computes exactly what the base model does. Only A and B
(r * (in + out) numbers per layer) are trained; :func:`merge_lora` folds them into W for
inference, and :func:`save_lora_adapters` writes them alone (plus any other tensors named, such as
a new classification head) to a small safetensors file.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchgpt.config import LORA_TARGETS as LORA_TARGETS
from scratchgpt.config import LoRAConfig, canonical_lora_targets
from scratchgpt.errors import OVERWRITE_ADVICE, CheckpointError, ConfigError, OutputExistsError
from scratchgpt.fileio import PathLike

ADAPTER_FORMAT = "scratchgpt-lora-adapters"


class LoRALayer(nn.Module):
    """The low-rank update ``(alpha / rank) * x @ A @ B``."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        # Kaiming-uniform as nn.Linear initialises its weight; B = 0 keeps the output unchanged.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * (x @ self.A @ self.B)


class LinearWithLoRA(nn.Module):
    """A Linear layer plus a LoRA update: ``linear(x) + lora(x)`` (``linear(x)`` alone while
    ``enabled`` is False: see :func:`lora_disabled`)."""

    enabled = True  # a class default: no new state in checkpoints

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)
        self.lora.to(device=linear.weight.device, dtype=linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.linear(x)
        return self.linear(x) + self.lora(x)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear whose weight includes the update: W + scaling * (A B)^T."""
        lin = self.linear
        out = nn.Linear(
            lin.in_features, lin.out_features, bias=lin.bias is not None,
            device=lin.weight.device, dtype=lin.weight.dtype,
        )  # fmt: skip
        delta = (self.lora.A @ self.lora.B).T * self.lora.scaling
        out.weight.copy_(lin.weight + delta.to(lin.weight.dtype))
        if lin.bias is not None:
            out.bias.copy_(lin.bias)
        out.weight.requires_grad_(lin.weight.requires_grad)
        return out


# The last part of a Linear's module path -> its projection (every family's names).
_PROJECTIONS = {
    "W_query": "q", "W_key": "k", "W_value": "v", "out_proj": "o",  # attention
    "fc1": "gate", "fc2": "up", "fc3": "down",  # SwiGLU (Llama 3.x, Qwen3)
    "0": "up", "2": "down",  # GPT-2's ff.layers.0 / ff.layers.2
}  # fmt: skip


def _targets_of(name: str) -> set[str]:
    """The LoRA targets a Linear's module path matches: its group and its projection."""
    if name == "out_head":
        return {"head"}
    dotted = f".{name}."
    if dotted.endswith(".ff.gate."):
        return set()  # a mixture of experts' router: adapting it would reshuffle the routing
    group = "attention" if ".att." in dotted else "feed_forward" if ".ff." in dotted else None
    if group is None:
        return set()
    return {group, _PROJECTIONS.get(name.rsplit(".", 1)[-1], "")} - {""}


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    return canonical_lora_targets(list(targets))


def apply_lora(
    model: nn.Module,
    rank: int = 16,
    alpha: float = 16.0,
    targets: Sequence[str] = LORA_TARGETS,
    *,
    freeze: bool = True,
) -> int:
    """Replace the chosen ``nn.Linear`` layers of a GPTModel (attention projections, feed-forward
    layers, output head; all by default) by :class:`LinearWithLoRA`, in place.

    With ``freeze`` every parameter not in a LoRA layer is frozen first (the book's recipe).
    The model's config records the adapters (``cfg.lora``), so a checkpoint of it says which
    architecture its weights belong to. Returns the number of layers adapted.
    """
    wanted = check_targets(targets)
    cfg = getattr(model, "cfg", None)
    # Validated before any layer changes (a head tied to the embeddings cannot be adapted).
    new_cfg = cfg.replace(lora=LoRAConfig(rank, alpha, wanted)) if hasattr(cfg, "lora") else None
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    replaced = _replace_linears(model, "", wanted, rank, alpha)
    if replaced == 0:
        raise ConfigError(f"no nn.Linear layer matches the LoRA targets {list(wanted)}")
    if new_cfg is not None:
        model.cfg = new_cfg
    return replaced


def _replace_linears(
    module: nn.Module, prefix: str, wanted: Sequence[str], rank: int, alpha: float
) -> int:
    """The book's ``replace_linear_with_lora`` recursion: depth first over ``named_children``
    in definition order, so each A matrix takes the same random numbers as the book's after the
    same seed (the output head, defined last, is adapted last). Returns the layers replaced."""
    replaced = 0
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Linear):
            if _targets_of(full) & set(wanted):
                setattr(module, name, LinearWithLoRA(child, rank, alpha))
                replaced += 1
        else:
            replaced += _replace_linears(child, full, wanted, rank, alpha)
    return replaced


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[int]:
    """Run ``model`` as its base model: every LoRA update is switched off inside the block (the
    frozen reference model of preference tuning, without a second copy in memory). Yields the
    number of adapted layers."""
    layers = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]
    for layer in layers:
        layer.enabled = False
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.enabled  # back to the class default


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> None:
    """The book's name: adapt every Linear layer (without freezing anything)."""
    apply_lora(model, rank, alpha, LORA_TARGETS, freeze=False)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LinearWithLoRA) for m in model.modules())


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its Linear layer, in place (same outputs, no extra
    matmuls; the config no longer lists adapters); returns how many layers were merged."""
    merged = 0
    for _name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LinearWithLoRA):
                setattr(module, child_name, child.merged())
                merged += 1
    cfg = getattr(model, "cfg", None)
    if merged and getattr(cfg, "lora", None) is not None:
        model.cfg = cfg.replace(lora=None)
    return merged


def count_trainable(model: nn.Module) -> int:
    """Parameters with ``requires_grad`` (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors (``...lora.A`` / ``...lora.B``) of a model."""
    return {k: v for k, v in model.state_dict().items() if ".lora." in f".{k}"}


def save_lora_adapters(
    model: nn.Module,
    path: PathLike,
    *,
    extra: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the LoRA tensors (and the state-dict entries named in ``extra``, e.g. a new head)
    to a safetensors file, with rank/alpha/targets in its header."""
    from safetensors.torch import save as save_bytes

    from scratchgpt.fileio import atomic_write_bytes

    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; refusing to overwrite it", OVERWRITE_ADVICE)
    sd = model.state_dict()
    tensors = lora_state_dict(model)
    if not tensors:
        raise ConfigError("the model has no LoRA layers; call apply_lora first")
    for k in extra:
        if k not in sd:
            raise ConfigError(f"{k!r} is not in the model's state dict")
        tensors[k] = sd[k]
    layer = next(m for m in model.modules() if isinstance(m, LoRALayer))
    header = {
        "format": ADAPTER_FORMAT,
        "rank": str(layer.rank),
        "alpha": str(layer.alpha),
        "metadata": json.dumps(metadata or {}),
    }
    blob = save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, header)
    atomic_write_bytes(p, blob)
    return p


def read_adapter_header(path: PathLike) -> dict[str, Any]:
    """rank, alpha and metadata stored in an adapter file."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such adapter file")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{p}: corrupt or not a safetensors file ({e})") from None
    if header.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{p}: not a scratchgpt LoRA adapter file")
    return {
        "rank": int(header["rank"]),
        "alpha": float(header["alpha"]),
        "metadata": json.loads(header.get("metadata") or "{}"),
    }


def load_lora_adapters(model: nn.Module, path: PathLike) -> dict[str, Any]:
    """Copy an adapter file's tensors into a model that already has matching LoRA layers;
    returns the file's header (rank, alpha, metadata)."""
    from safetensors.torch import load_file

    header = read_adapter_header(path)
    tensors = load_file(str(path))
    own = model.state_dict()
    missing = [k for k in lora_state_dict(model) if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: adapters do not fit the model (missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}); apply_lora with the same targets first"
        )
    with torch.no_grad():
        for k, t in tensors.items():
            if own[k].shape != t.shape:
                raise CheckpointError(
                    f"{path}: tensor {k} has shape {tuple(t.shape)}, the model expects "
                    f"{tuple(own[k].shape)} (rank {header['rank']} in the file)"
                )
            own[k].copy_(t)
    return header
