"""The DPO task on the shared loop (Rafailov et al. 2023, eq. 7; the book's
``compute_dpo_loss``): the policy's and the reference model's log-probabilities of the chosen
and the rejected response of each pair, the loss ``-log sigmoid(beta * (policy log-ratio -
reference log-ratio))``, and the implicit rewards (policy minus reference log-probability) it
logs: chosen and rejected reward, their margin, and how often the chosen one is higher.

A batch is :func:`scratchgpt.data.preferences.preference_collate`'s ``(2B, T)`` pair: chosen
rows first, then rejected, so one forward pass of each model scores both responses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, IGNORE_INDEX
from scratchgpt.model.lora import lora_disabled
from scratchgpt.tasks.instruct.task import InstructTask
from scratchgpt.training.task import target_logprobs

REWARD_KEYS = ("chosen_reward", "rejected_reward", "reward_margin", "reward_accuracy")


@dataclass(frozen=True)
class DPOOutput:
    """Per pair (B,): the DPO loss and the implicit rewards (detached)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> DPOOutput:
    """The DPO loss of each pair from the four log-probabilities (each (B,)). The rewards are
    the book's: policy minus reference log-probability, without the factor beta."""
    policy_logratios = policy_chosen - policy_rejected
    reference_logratios = reference_chosen - reference_rejected
    logits = policy_logratios - reference_logratios
    losses = -F.logsigmoid(beta * logits)
    return DPOOutput(
        losses=losses,
        chosen_rewards=(policy_chosen - reference_chosen).detach(),
        rejected_rewards=(policy_rejected - reference_rejected).detach(),
    )


def sequence_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Each row's log-probability of its counted targets (B,): their sum, or their mean (the
    book's ``compute_logprobs``). A row without counted targets (a response cut off by the
    length limit) scores 0."""
    logp = target_logprobs(logits, targets, IGNORE_INDEX).sum(-1)
    if reduction == "sum":
        return logp
    counted = (targets != IGNORE_INDEX).sum(-1).clamp(min=1)
    return logp / counted


class DPOTask(InstructTask):
    """DPO loss on preference pairs; the sample answers a fixed validation record.

    ``reference`` is a frozen model scoring the same batches; None means the policy itself with
    its LoRA adapters switched off (the base model, no second copy in memory)."""

    name = "dpo"
    unit = "pair"

    def __init__(
        self,
        reference: nn.Module | None,
        beta: float = 0.1,
        logprob: str = "mean",
        tokenizer: Any = None,
        style: str = DEFAULT_STYLE,
        sample_entry: Mapping[str, str] | None = None,
        sample_tokens: int = 50,
    ) -> None:
        super().__init__(tokenizer, style, sample_entry, sample_tokens)
        self.reference = reference
        self.beta = beta
        self.logprob = logprob

    def _logprobs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        lp = sequence_logprobs(model(inputs), targets, self.logprob)
        return lp.chunk(2)  # (chosen, rejected), each (B,)

    @torch.no_grad()
    def reference_logprobs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, ...]:
        """The reference model's (chosen, rejected) log-probabilities, in eval mode."""
        with self._reference(model) as ref:
            return self._logprobs(ref, batch)

    @contextlib.contextmanager
    def _reference(self, policy: nn.Module) -> Iterator[nn.Module]:
        if self.reference is None:
            was_training = policy.training
            policy.eval()
            try:
                with lora_disabled(policy):
                    yield policy
            finally:
                policy.train(was_training)
            return
        device = next(policy.parameters()).device
        if next(self.reference.parameters()).device != device:
            self.reference.to(device)
        yield self.reference.eval()

    def pair_output(self, model: nn.Module, batch: Any) -> DPOOutput:
        """The DPO loss and rewards of every pair of the batch."""
        ref_chosen, ref_rejected = self.reference_logprobs(model, batch)
        chosen, rejected = self._logprobs(model, batch)
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.pair_output(model, batch).losses.mean()

    def count_tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        # Means over pairs, so a short last batch counts as much as its pairs.
        sums = dict.fromkeys(("loss", *REWARD_KEYS), 0.0)
        pairs = 0
        for batch in batches:
            out = self.pair_output(model, batch)
            margin = out.chosen_rewards - out.rejected_rewards
            sums["loss"] += float(out.losses.float().sum())
            sums["chosen_reward"] += float(out.chosen_rewards.float().sum())
            sums["rejected_reward"] += float(out.rejected_rewards.float().sum())
            sums["reward_margin"] += float(margin.float().sum())
            sums["reward_accuracy"] += float((margin > 0).float().sum())
            pairs += int(out.losses.numel())
        if pairs == 0:
            return {}
        return {key: value / pairs for key, value in sums.items()}


def reference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode: the reference of full fine-tuning."""
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
