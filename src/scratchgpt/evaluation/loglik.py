"""The one log-likelihood of scratchgpt's evaluations: how likely a model finds a continuation
after a context. ``evaluate loss`` (held-out loss), ``evaluate choice`` (multiple-choice accuracy)
and the lm-evaluation-harness adapter all score tokens through
:func:`scratchgpt.training.task.target_logprobs`, the per-token log-probability that preference
tuning uses too.

:func:`score_continuations` scores many ``(context ids, continuation ids)`` requests in batches:
the longest first (so a batch pads little), each sequence cut from the left to the model's
context length (as the harness's own backends do), right-padded, with only the continuation's
targets counted. It also says whether the continuation is the greedy one (every token the
argmax), which the harness reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scratchgpt.data.instructions import IGNORE_INDEX
from scratchgpt.errors import DataError
from scratchgpt.training.task import target_logprobs


@dataclass(frozen=True)
class Score:
    """The log-likelihood of one continuation: the sum of its tokens' log-probabilities, whether
    each token is the model's greedy choice, and how many tokens were scored."""

    logprob: float
    greedy: bool
    tokens: int


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def pack_requests(
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    context_length: int,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` (B, T) for requests of (context, continuation) ids: each sequence
    cut from the left to ``context_length + 1`` tokens, the last one dropped from the inputs;
    targets are the next tokens where they belong to the continuation, else ``IGNORE_INDEX``."""
    rows = []
    for i, (context, continuation) in enumerate(requests):
        if not continuation:
            raise DataError(f"request {i}: the continuation is empty; nothing to score")
        if not context:
            raise DataError(
                f"request {i}: the context is empty; start it with the end-of-text token"
            )
        whole = [*context, *continuation][-(context_length + 1) :]
        n_cont = min(len(continuation), len(whole) - 1)
        rows.append((whole, n_cont))
    width = max(len(whole) - 1 for whole, _ in rows)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (whole, n_cont) in enumerate(rows):
        n = len(whole) - 1
        inputs[r, :n] = torch.tensor(whole[:-1], dtype=torch.long)
        targets[r, n - n_cont : n] = torch.tensor(whole[-n_cont:], dtype=torch.long)
    return inputs, targets


@torch.no_grad()
def score_batch(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> list[Score]:
    """The Score of each row of a packed batch (see :func:`pack_requests`)."""
    logits = model(inputs)  # (B, T, V)
    logp = target_logprobs(logits, targets, IGNORE_INDEX)  # (B, T)
    counted = targets != IGNORE_INDEX
    greedy = (logits.argmax(-1) == targets) | ~counted
    return [
        Score(float(logp[r].sum()), bool(greedy[r].all()), int(counted[r].sum()))
        for r in range(inputs.shape[0])
    ]


@torch.no_grad()
def score_continuations(
    model: nn.Module,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int = 8,
    progress: bool | None = False,
) -> list[Score]:
    """The Score of each ``(context ids, continuation ids)`` request, in the order given. The
    model runs in eval mode; ``progress``: a bar on a terminal, a line every few seconds
    elsewhere (None), or nothing (False)."""
    from scratchgpt.progress import progress as progress_bar

    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    context_length = int(model.cfg.context_length)
    device = _model_device(model)
    # Longest first: each batch pads to its first row, and an out-of-memory shows at once.
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    out: list[Score | None] = [None] * len(requests)
    was_training = model.training
    model.eval()
    bar = progress_bar(
        total=len(requests), desc="scoring", unit="requests", enabled=progress, leave=False
    )
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs, targets = pack_requests([requests[i] for i in idx], context_length, pad_id)
            for i, score in zip(idx, score_batch(model, inputs.to(device), targets.to(device))):
                out[i] = score
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return [s for s in out if s is not None]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context and its continuation, split as lm-evaluation-harness splits them
    (``TemplateLM._encode_pair``): trailing whitespace of the context moves to the continuation,
    the whole text is encoded at once and the continuation is what follows the context's own
    ids. An empty context is the end-of-text token (the harness's prefix token)."""
    if not context:
        cont = list(tokenizer.encode(continuation))
        prefix = prefix_token(tokenizer)
        return ([prefix], cont) if cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = list(tokenizer.encode(context + continuation))
    ctx = list(tokenizer.encode(context))
    return ctx, whole[len(ctx) :]


def prefix_token(tokenizer: Any) -> int:
    """The token an empty context starts with: the tokenizer's end-of-text (GPT-2: 50256)."""
    eot = getattr(tokenizer, "eot_id", None)
    if eot is None:
        raise DataError("the tokenizer has no end-of-text token to start an empty context with")
    return int(eot)
