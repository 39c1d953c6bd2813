"""The instruction-tuning task on the shared loop: next-token loss that skips padding (and,
optionally, the prompt), token-weighted evaluation, a sample answer (the book's section 7.6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import DEFAULT_STYLE, IGNORE_INDEX, get_prompt_style
from scratchgpt.data.prompts import render_prompt
from scratchgpt.training.task import PERPLEXITY_KEY, Task, next_token_loss, perplexity


def calc_loss_batch(
    input_batch: torch.Tensor, target_batch: torch.Tensor, model: nn.Module
) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``-100`` (padding, masked prompt)."""
    return next_token_loss(model, input_batch, target_batch, IGNORE_INDEX)


class InstructTask(Task):
    """Next-token loss on instruction examples; the sample answers a fixed validation record."""

    name = "instruct"
    unit = "example"

    def __init__(
        self,
        tokenizer: Any = None,
        style: str = DEFAULT_STYLE,
        sample_entry: Mapping[str, str] | None = None,
        sample_tokens: int = 50,
    ) -> None:
        self.tokenizer = tokenizer
        self.style = get_prompt_style(style, tokenizer)
        self.sample_entry = sample_entry
        self.sample_tokens = sample_tokens

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return calc_loss_batch(inputs, targets, model)

    def count_tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        # Token-weighted, so batches with much padding do not count as much as full ones.
        total, count = 0.0, 0
        for inputs, targets in batches:
            n = int((targets != IGNORE_INDEX).sum())
            if n == 0:
                continue
            total += float(calc_loss_batch(inputs, targets, model)) * n
            count += n
        if count == 0:
            return {}
        mean = total / count
        return {"loss": mean, PERPLEXITY_KEY: perplexity(mean)}

    def sample(self, model: nn.Module) -> str | None:
        if self.tokenizer is None or self.sample_entry is None or self.sample_tokens <= 0:
            return None
        prompt = render_prompt(self.sample_entry, self.style)
        from scratchgpt.generation import generate_text

        text = generate_text(
            model, self.tokenizer, prompt, max_new_tokens=self.sample_tokens, temperature=0.0
        )
        return prompt + str(text)
