"""Ollama ``Modelfile`` for a GGUF export: ``ollama create NAME -f Modelfile`` takes it as is.

The TEMPLATE is written in Ollama's Go-template syntax from the model's prompt style: an
instruction-finetuned GPT-2 checkpoint records "prompt_style" (alpaca or phi3) in its metadata,
and the template rebuilds that exact prompt around the user's message (``{{ .Prompt }}``); a
Llama 3 / Qwen3 model with a chat template gets its family's turn format; a base model gets
the bare prompt (plain text continuation). Generation stops at the tokenizer's stop tokens and
at the style's next-turn marker (PARAMETER stop lines).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scratchgpt.data.instructions import PROMPT_STYLES
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_text

MODELFILE = "Modelfile"
# Each chat family's turn format in Ollama's template syntax (what Ollama's own library models
# use); llama.cpp adds Llama 3's <|begin_of_text|> itself (add_bos_token in the file).
CHAT_TEMPLATES = {
    "llama3": (
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
        "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
        "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}"
        "<|eot_id|>"
    ),
    "qwen3": (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n{{ .Response }}<|im_end|>"
    ),
}


def _quote(text: str) -> str:
    """A Modelfile string: triple quotes hold newlines (and cannot hold triple quotes)."""
    if '"""' in text:
        raise ConfigError(f'a Modelfile value cannot contain """: {text!r}')
    return f'"""{text}"""' if "\n" in text or '"' in text else f'"{text}"'


def ollama_template(
    metadata: Mapping[str, Any] | None, tokenizer: Any = None, family: str | None = None
) -> tuple[str, list[str]]:
    """The Go TEMPLATE for a checkpoint's prompt style (or its family's chat format when its
    tokenizer has a chat template) and the stop strings it adds."""
    style_name = (metadata or {}).get("prompt_style")
    chat = getattr(tokenizer, "chat_template", None) is not None
    if family in CHAT_TEMPLATES and (style_name == "chat" or (chat and not style_name)):
        return CHAT_TEMPLATES[family], []
    if not style_name:
        return "{{ .Prompt }}", []
    style = PROMPT_STYLES.get(style_name)
    if style is None:
        raise ConfigError(
            f"the checkpoint's prompt style {style_name!r} has no Ollama template; known: "
            f"{sorted(PROMPT_STYLES)}"
        )
    text = style.preamble + style.instruction.format(instruction="{{ .Prompt }}") + style.response
    if style.preamble:
        # Ollama's SYSTEM message, when given, replaces the style's preamble.
        text = (
            "{{ if .System }}{{ .System }}{{ else }}"
            + style.preamble
            + "{{ end }}"
            + (text[len(style.preamble) :])
        )
    return text, [style.turn_start]


def modelfile_text(
    gguf_name: str,
    tokenizer: Any,
    metadata: Mapping[str, Any] | None = None,
    family: str | None = None,
) -> str:
    """The Modelfile's text for ``gguf_name`` (the .gguf file beside it); ``family``: the
    model's (``cfg.family``), which picks the chat format of a chat-template tokenizer."""
    template, stops = ollama_template(metadata, tokenizer, family)
    stops += [tokenizer.id_to_token(i) for i in getattr(tokenizer, "stop_ids", [])]
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(template)}"]
    lines += [f"PARAMETER stop {_quote(s)}" for s in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def write_modelfile(
    gguf_path: PathLike,
    tokenizer: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    family: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``Modelfile`` beside ``gguf_path`` (atomically; refuses to replace one unless
    ``overwrite``) and return its path."""
    gguf_path = Path(gguf_path)
    text = modelfile_text(gguf_path.name, tokenizer, metadata, family)
    return atomic_write_text(gguf_path.with_name(MODELFILE), text, overwrite=overwrite)
