"""Mixture-of-experts feed-forward (the book's bonus chapters on MoE and Qwen3-MoE).

A router (``gate``, one Linear to ``num_experts`` scores) picks for each token the
``num_experts_per_tok`` experts with the highest softmax probabilities; the token's output is the
sum of those experts' outputs weighted by their probabilities (renormalised to sum to 1 when
``norm_topk_prob``, as Qwen3-MoE does). Each expert is a small SwiGLU feed-forward
(``moe_intermediate_size`` wide) that runs only on the tokens routed to it, so a token costs k
experts' FLOPs, not all of them: that is how Qwen3-30B-A3B holds 30.5B parameters but computes
with 3.3B per token.

After each forward pass the module keeps, for training and logging, the auxiliary
load-balancing loss (:attr:`MoEFeedForward.aux_loss`) and how many tokens each expert received
(:attr:`MoEFeedForward.expert_counts`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from scratchgpt.config import GPTConfig
from scratchgpt.model.feed_forward import SwiGLUFeedForward


def load_balancing_loss(probs: torch.Tensor, counts: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Switch Transformer's auxiliary loss as Qwen-MoE computes it (transformers'
    ``load_balancing_loss_func``): ``num_experts * sum_i f_i * P_i``, with ``f_i`` the fraction of
    tokens routed to expert i (the f_i sum to k) and ``P_i`` its mean router probability. It is k
    when the load is even and grows as routing collapses onto few experts; only P carries a
    gradient (the choice itself is not differentiable)."""
    num_experts = probs.shape[-1]
    f = counts.to(probs.dtype) / max(num_tokens, 1)
    return num_experts * (f * probs.mean(dim=0)).sum()


class Router(nn.Linear):
    """The router's Linear (emb -> one score per expert), a type of its own so that int8
    quantization, which replaces plain ``nn.Linear`` layers only, keeps it in float."""


class MoEFeedForward(nn.Module):
    """A router and ``num_experts`` SwiGLU experts; each token goes to its top-k experts."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.num_experts is not None and cfg.num_experts_per_tok is not None
        assert cfg.moe_intermediate_size is not None
        self.num_experts = cfg.num_experts
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        # Named as in Qwen3-MoE (mlp.gate, mlp.experts.N): the router, then the experts.
        self.gate = Router(cfg.emb_dim, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLUFeedForward(cfg.emb_dim, cfg.moe_intermediate_size)
            for _ in range(cfg.num_experts)
        )
        # Set by forward: the load-balancing loss (with its graph) and tokens per expert.
        self.aux_loss: torch.Tensor | None = None
        self.expert_counts: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router probabilities (N, E) in fp32, top-k weights (N, k), top-k experts (N, k))
        for tokens ``x`` (N, emb)."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)  # (N, E)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights.to(x.dtype), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, emb)
        probs, weights, experts = self.route(x)
        # Sort the N*k (token, expert) assignments by expert: each expert's tokens are then one
        # contiguous run, gathered with index_select and added back with index_add.
        flat = experts.reshape(-1)  # (N*k,)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.num_experts)  # (E,)
        tokens = order // self.top_k  # the token of each sorted assignment
        gains = weights.reshape(-1)[order].unsqueeze(-1)  # (N*k, 1)
        out = torch.zeros_like(x)
        start = 0
        for expert, n in zip(self.experts, counts.tolist(), strict=True):
            if n:
                idx = tokens[start : start + n]
                y = expert(x.index_select(0, idx)) * gains[start : start + n]
                out.index_add_(0, idx, y.to(out.dtype))
                start += n
        self.expert_counts = counts.detach()
        self.aux_loss = load_balancing_loss(probs, counts, x.shape[0])
        return out.reshape(shape)


def moe_layers(model: nn.Module) -> Iterator[MoEFeedForward]:
    """The mixture-of-experts feed-forwards of a model, block by block."""
    yield from (m for m in model.modules() if isinstance(m, MoEFeedForward))


def moe_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The mean load-balancing loss of the model's MoE layers after its last forward pass (None
    for a dense model); training adds it, times a small coefficient, to the language loss."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    return torch.stack(losses).mean() if losses else None


def expert_usage(model: nn.Module) -> torch.Tensor | None:
    """Tokens per expert, summed over the MoE layers, of the last forward pass: (num_experts,)
    (None for a dense model). A few experts with most of the tokens means routing collapsed."""
    counts = [m.expert_counts for m in moe_layers(model) if m.expert_counts is not None]
    return torch.stack(counts).sum(dim=0) if counts else None
