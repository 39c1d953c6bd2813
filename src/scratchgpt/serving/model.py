"""What the server serves: a language model (base or instruction-tuned) or a classifier, and the
generation and classification jobs that run on the engine's worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scratchgpt.errors import DataError

# Chat messages of a base model (no prompt style) are joined with this between them.
BASE_CHAT_SEPARATOR = "\n"


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
) -> ServedModel:
    """Load a checkpoint folder, run folder or Hugging Face GPT-2 folder for serving; a
    classifier checkpoint (its config has ``num_classes``) becomes a classifier, anything else a
    language model. ``classifier`` is then the :class:`scratchgpt.weights.LoadedModel`, which
    :func:`scratchgpt.tasks.classify.classify` takes as it is."""
    import torch

    from scratchgpt.data.instructions import get_prompt_style
    from scratchgpt.errors import ConfigError
    from scratchgpt.generation import optimize_for_decoding
    from scratchgpt.weights import load_model, with_default_tokenizer

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    p = Path(path)
    loaded = load_model(p, device=device)
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
    style = None
    if prompt_style or meta.get("prompt_style"):
        style = get_prompt_style(prompt_style or meta["prompt_style"]).name
    return ServedModel(
        model_name, model, loaded.tokenizer, "completion", style, None, created, meta
    )


def message_text(content: Any) -> str:
    """A chat message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] if isinstance(part, dict) else part.text for part in content)


def render_chat(messages: Sequence[tuple[str, str]], style: str | None) -> str:
    """The prompt for ``(role, text)`` messages: the prompt style's turns for an instruction
    model (as :class:`scratchgpt.chat.ChatSession` builds them), else the texts joined by a
    newline. The last message must be the user's: the model writes the assistant's reply."""
    if not messages:
        raise DataError("messages is empty: give at least one user message")
    if messages[-1][0] != "user":
        raise DataError(
            f"the last message is the {messages[-1][0]}'s; it must be the user's (the model "
            "writes the assistant's reply)"
        )
    if style is None:
        return BASE_CHAT_SEPARATOR.join(text for _, text in messages)
    from scratchgpt.chat import TURN_SEPARATOR
    from scratchgpt.data.instructions import get_prompt_style

    st = get_prompt_style(style)
    system = [text for role, text in messages if role in ("system", "developer")]
    parts = ["\n".join(system) + TURN_SEPARATOR] if system else []
    user: list[str] = []
    for role, text in messages:
        if role == "user":
            user.append(text)
        elif role == "assistant":
            entry = {"instruction": "\n".join(user), "input": "", "output": text}
            parts.append(st.prompt(entry) + text + TURN_SEPARATOR)
            user = []
    parts.append(st.prompt({"instruction": "\n".join(user), "input": "", "output": ""}))
    return "".join(parts)


@dataclass
class Choice:
    """One generated continuation, as it ends."""

    index: int
    text: str
    finish_reason: str  # "stop" (end of text or a stop string) or "length"
    completion_tokens: int


def run_generation(
    served: ServedModel,
    prompts: Sequence[list[int]],
    *,
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float | None,
    top_k: int | None,
    stop: list[str],
    seed: int | None,
    emit: Any,
    should_stop: Any,
) -> list[Choice]:
    """Generate ``n`` continuations of each prompt (choice ``i * n + j``), emitting
    ``(index, piece)`` as text arrives; stops early when ``should_stop()`` says so. Choice
    ``j`` of a seeded request uses ``seed + j``."""
    from scratchgpt.generation import stream_generate

    tok = served.tokenizer
    eos = getattr(tok, "eot_id", None)
    choices: list[Choice] = []
    for i, ids in enumerate(prompts):
        for j in range(n):
            index = i * n + j
            pieces: list[str] = []
            stream = stream_generate(
                served.model, tok, ids, max_tokens, temperature=temperature, top_k=top_k,
                top_p=top_p, eos_id=eos, stop_strings=stop or None,
                seed=None if seed is None else seed + j,
            )  # fmt: skip
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
    return choices
