"""An lm-evaluation-harness model adapter: any harness task on any scratchgpt model (a checkpoint,
a run folder, a Hugging Face GPT-2 / Llama 3.x / Qwen3 folder or a cached model name).

Importing this module registers the model type ``scratchgpt`` with the harness's registry
(``lm_eval.api.registry.register_model``). The installed harness (0.4.x) discovers no model
plugins by itself, so run it through this module, which registers the adapter and then hands the
command line to the harness unchanged::

    scratchgpt-lm-eval --model scratchgpt --model_args checkpoint=runs/sft --tasks hellaswag
    python -m scratchgpt.evaluation.harness --model scratchgpt --model_args checkpoint=gpt2-small ...

or from Python: ``import scratchgpt.evaluation.harness`` then
``lm_eval.simple_evaluate(model="scratchgpt", model_args={"checkpoint": ...}, tasks=[...])``.

``loglikelihood`` and ``loglikelihood_rolling`` score through
:func:`scratchgpt.evaluation.loglik.score_continuations`, the log-likelihood that ``evaluate
loss`` and ``evaluate choice`` use; ``generate_until`` decodes batches with the KV cache
(:func:`scratchgpt.generation.generate_text`). ``lm-eval`` is the ``eval`` extra
(``pip install 'scratchgpt[eval]'``) and part of the dev set-up.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (the built-in models first: see below)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from scratchgpt.errors import ConfigError
from scratchgpt.evaluation.loglik import prefix_token, score_continuations
from scratchgpt.generation import generate_text
from scratchgpt.weights import load_model, require_language_model, with_default_tokenizer

# The harness fills its registry with its own models only when the registry is empty; they are
# registered above (lm_eval.models) so that adding ours keeps `--model hf` and the rest working.
MODEL_NAME = "scratchgpt"
DEFAULT_MAX_GEN_TOKS = 256


def _flag(value: Any) -> bool:
    """A boolean from ``--model_args`` (which arrive as strings)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@register_model(MODEL_NAME)
class ScratchGPTLM(TemplateLM):
    """The harness's view of a scratchgpt model. ``--model_args``: ``checkpoint`` (required),
    ``device`` (cpu, cuda; default cpu), ``batch_size`` (default 8), ``max_gen_toks`` (default
    256), ``quantize`` (int8), ``verify`` (check weight checksums; default: as every command)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        batch_size: int | str = 8,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        quantize: str | None = None,
        verify: bool | str | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        if not checkpoint:
            raise ConfigError("--model_args needs checkpoint=DIR (or a model name)")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device}: no CUDA GPU is available here; use device=cpu")
        # The harness passes its own --batch_size ("auto" included) and --device; a number wins.
        size = str(batch_size).split(":")[0]
        self._batch_size = int(size) if size.isdigit() and int(size) > 0 else 8
        self.max_gen_toks = int(max_gen_toks)
        check = None if verify is None else _flag(verify)
        loaded = load_model(checkpoint, quantize=quantize or None, verify=check)
        loaded = with_default_tokenizer(require_language_model(loaded))
        self.model = loaded.model.to(device).eval()
        self.tok = loaded.tokenizer
        self.checkpoint = str(checkpoint)

    # ---- what the harness asks of a model -------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return prefix_token(self.tok)

    @property
    def max_length(self) -> int:
        return int(self.model.cfg.context_length)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        # Task text is plain text: control-token look-alikes stay ordinary text.
        return list(self.tok.encode(string))

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return str(self.tok.decode(list(tokens)))

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kwargs: Any
    ) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        scores = self._score(pairs, kwargs.get("disable_tqdm", False))
        out = []
        for (key, _, _), s in zip(requests, scores):
            result = (s.logprob, s.greedy)
            self.cache_hook.add_partial("loglikelihood", key, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of whole texts (perplexity tasks): each text cut into windows of
        the model's context, every token predicted once."""
        windows, owners = [], []
        for i, req in enumerate(requests):
            (text,) = req.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, s in zip(owners, self._score(windows, disable_tqdm)):
            totals[owner] += s.logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when a task asks) continuations in batches of requests with the
        same generation settings, cut before the first of the task's stop strings."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[repr(sorted(req.args[1].items()))].append(i)
        out: list[str] = [""] * len(requests)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.pop("temperature", 0.0))
            if not kwargs.pop("do_sample", temperature > 0):
                temperature = 0.0
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                prompts = [self._fit(requests[i].args[0], max_new) for i in chunk]
                with torch.no_grad():
                    texts = generate_text(
                        self.model, self.tok, prompts, max_new_tokens=max_new,
                        temperature=temperature, stop_strings=until or None, seed=1234,
                    )  # fmt: skip
                for i, text in zip(chunk, texts):
                    out[i] = str(text)
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out

    # ---- helpers -------------------------------------------------------------------------------

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]], disable_tqdm: bool) -> list:
        return score_continuations(
            self.model,
            pairs,
            pad_id=self.eot_token_id,
            batch_size=self.batch_size,
            progress=False if disable_tqdm else None,
        )

    def _fit(self, prompt: str, max_new: int) -> str:
        """The prompt, cut from the left so that it and ``max_new`` tokens fit the context (as
        the harness's Hugging Face backend does)."""
        keep = max(self.max_length - max_new, 1)
        ids = self.tok_encode(prompt)
        return prompt if len(ids) <= keep else self.tok_decode(ids[-keep:])


def main(argv: Sequence[str] | None = None) -> None:
    """``scratchgpt-lm-eval``: the harness's own command line, with ``--model scratchgpt``
    registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
