"""Evaluation: held-out loss/perplexity and LLM-as-judge scoring of responses."""

from scratchgpt.evaluation.judge import (
    JudgeClient,
    JudgeError,
    judge_prompt,
    judge_responses,
    parse_score,
)

__all__ = [
    "JudgeClient",
    "JudgeError",
    "evaluate_loss",
    "judge_prompt",
    "judge_responses",
    "parse_score",
]


def __getattr__(name: str) -> object:
    # metrics imports torch; the judge does not, so it stays importable cheaply.
    if name == "evaluate_loss":
        from scratchgpt.evaluation.metrics import evaluate_loss

        return evaluate_loss
    raise AttributeError(name)
