"""What the weight-parity tests against transformers share: random weights of a useful size,
prompts, logits from either side, and a copy of a folder with its config.json edited."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

VOCAB = 257  # the tiny random models' vocabulary: odd, so no shape is a power of two


def randomize(model: torch.nn.Module, norms: tuple[float, float] = (0.5, 1.5)) -> None:
    """Random values of a useful size: norm weights uniform in ``norms`` (transformers
    initialises them to 1, Gemma's to 0), every other tensor N(0, 0.2) (routers start at 0), so
    every mapping, and a swapped pair of tensors, shows in the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(*norms)
            else:
                p.normal_(0, 0.2)


def prompt(batch: int = 2, length: int = 7, seed: int = 1, low: int = 0) -> torch.Tensor:
    """Seeded random token ids in [low, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (batch, length), generator=g)


def logits_of(model: torch.nn.Module, idx: torch.Tensor, **kwargs) -> torch.Tensor:
    """Logits of ours or of a transformers model, without gradients."""
    with torch.no_grad():
        out = model(idx, **kwargs)
    return getattr(out, "logits", out)


def edited_copy(folder: Path, tmp_path: Path, **changes) -> Path:
    """A copy of a Hugging Face folder's config.json (with ``changes``) and weights."""
    out = tmp_path / "edited"
    out.mkdir()
    raw = json.loads((folder / "config.json").read_text())
    raw.update(changes)
    (out / "config.json").write_text(json.dumps(raw))
    save_file(load_file(folder / "model.safetensors"), out / "model.safetensors")
    return out
