"""Changes made to a loaded GPTModel before fine-tuning: its dropout rate and an untied head.

Both keep ``model.cfg`` describing the model, so a checkpoint saved afterwards rebuilds it.
"""

from __future__ import annotations

from torch import nn

from scratchgpt.errors import ConfigError


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set every dropout rate of a GPTModel (and its config) to ``rate``."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"drop_rate must be in [0, 1), got {rate}")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = rate
    model.cfg = model.cfg.replace(drop_rate=rate)


def untie_head(model: nn.Module) -> bool:
    """Give a tied output head its own copy of the token embeddings, as the book's
    ``load_weights_into_gpt`` does, so the two train separately; the config then says
    ``tie_weights: false``. Returns whether the head was tied."""
    if not model.cfg.tie_weights:
        return False
    head = model.out_head
    head.weight = nn.Parameter(
        model.tok_emb.weight.detach().clone(), requires_grad=model.tok_emb.weight.requires_grad
    )
    model.cfg = model.cfg.replace(tie_weights=False)
    return True
