"""What the server serves: a language model (base or instruction-tuned) or a classifier; the
classification job the engine's worker runs; and ``run_generation``, a request's generation
without the engine (one choice after another, for Python callers; the server batches instead)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scratchgpt.data.chat_style import CHAT_STYLE
from scratchgpt.data.instructions import get_prompt_style
from scratchgpt.data.prompts import render_chat, turn_stops
from scratchgpt.generation import SamplingConfig, stop_ids, stream_generate
from scratchgpt.tasks.classify import classify

if TYPE_CHECKING:
    import torch

__all__ = [
    "Choice",
    "ServedModel",
    "chat_prompt",
    "classify_texts",
    "load_served_model",
    "message_text",
    "run_generation",
]


@dataclass
class ServedModel:
    """A loaded model and how to talk to it. ``style`` is the prompt style of an instruction
    model (chat messages are rendered with it) or None for a base model; ``classifier`` is set
    for classifier checkpoints (then ``model``/``tokenizer`` are the classifier's)."""

    name: str
    model: Any
    tokenizer: Any
    kind: Literal["completion", "classifier"] = "completion"
    style: str | None = None
    classifier: Any = None
    created: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        """Tokens the model sees at once."""
        return int(self.model.cfg.context_length)


def load_served_model(
    path: str | Path,
    *,
    device: str = "cpu",
    prompt_style: str | None = None,
    name: str | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> ServedModel:
    """Load a checkpoint folder, run folder or Hugging Face GPT-2 folder for serving; a
    classifier checkpoint (its config has ``num_classes``) becomes a classifier, anything else a
    language model. ``classifier`` is then the :class:`scratchgpt.weights.LoadedModel`, which
    :func:`scratchgpt.tasks.classify.classify` takes as it is. ``dtype`` (a torch dtype, or
    None: as saved) is the weights' dtype."""
    import torch

    from scratchgpt.errors import ConfigError
    from scratchgpt.generation import optimize_for_decoding
    from scratchgpt.weights import load_model, with_default_tokenizer

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    p = Path(path)
    loaded = load_model(p, device=device, dtype=dtype, quantize=quantize)
    meta = dict(loaded.metadata)
    model_name = name or (p.resolve().name if p.exists() else str(path))
    created = int(loaded.path.stat().st_mtime) if loaded.path.exists() else 0
    if loaded.config.num_classes is not None:
        if loaded.tokenizer is None:
            from scratchgpt.tokenizers import get_tokenizer

            loaded.tokenizer = get_tokenizer("gpt2")
        loaded.model.requires_grad_(False)
        return ServedModel(
            model_name, loaded.model, loaded.tokenizer, "classifier", None, loaded, created, meta
        )
    with_default_tokenizer(loaded)
    model = loaded.model.eval()
    optimize_for_decoding(model)
    # A base model has no prompt style; a model with a chat template uses it.
    name = prompt_style or meta.get("prompt_style")
    if name is None and getattr(loaded.tokenizer, "chat_template", None):
        name = CHAT_STYLE
    style = get_prompt_style(name, loaded.tokenizer).name if name else None
    return ServedModel(
        model_name, model, loaded.tokenizer, "completion", style, None, created, meta
    )


def message_text(content: Any) -> str:
    """A chat message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] if isinstance(part, dict) else part.text for part in content)


@dataclass
class Choice:
    """One generated continuation, as it ends."""

    index: int
    text: str
    finish_reason: str  # "stop" (end of text or a stop string) or "length"
    completion_tokens: int


def chat_prompt(served: ServedModel, messages: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """(prompt, stop strings) for chat ``messages``: rendered in the served model's prompt style
    (a base model: the texts joined by a newline); an instruction model's reply ends where it
    starts a new user turn."""
    if served.style is None:
        return render_chat(messages, None), []
    style = get_prompt_style(served.style, served.tokenizer)
    return render_chat(messages, style), turn_stops(style)


def classify_texts(served: ServedModel, texts: Sequence[str]) -> list[Any]:
    """The predictions of a served classifier for ``texts`` (runs on the engine's worker)."""
    return classify(served.classifier, list(texts), progress=False)  # no lines in a server log


def run_generation(
    served: ServedModel,
    prompts: Sequence[list[int]],
    *,
    n: int,
    max_tokens: int,
    sampling: SamplingConfig,
    stop: list[str],
    emit: Any,
    should_stop: Any,
) -> list[Choice]:
    """Generate ``n`` continuations of each prompt (choice ``i * n + j``), emitting
    ``(index, piece)`` as text arrives; stops early when ``should_stop()`` says so. Choice
    ``j`` of a seeded request uses ``seed + j``."""
    tok = served.tokenizer
    eos = stop_ids(tok) or None
    choices: list[Choice] = []
    for i, ids in enumerate(prompts):
        for j in range(n):
            index = i * n + j
            seed = None if sampling.seed is None else sampling.seed + j
            pieces: list[str] = []
            stream = stream_generate(
                served.model,
                tok,
                ids,
                max_tokens,
                eos_id=eos,
                stop_strings=stop or None,
                sampling=dataclasses.replace(sampling, seed=seed),
            )
            try:
                for piece in stream:
                    pieces.append(piece)
                    emit((index, piece))
                    if should_stop():
                        return choices
            finally:
                stream.close()
            choices.append(
                Choice(index, "".join(pieces), stream.finish_reason or "stop", stream.new_tokens)
            )
            emit((index, None))
            if should_stop():
                return choices
    return choices
