"""Ollama ``Modelfile`` for a GGUF export: ``ollama create NAME -f Modelfile`` takes it as is.

The TEMPLATE is written in Ollama's Go-template syntax from the model's prompt style: an
instruction-finetuned GPT-2 checkpoint records "prompt_style" (alpaca or phi3) in its metadata,
and the template rebuilds that exact prompt around the user's message (``{{ .Prompt }}``); a
base model gets the bare prompt (plain text continuation). Generation stops at the
tokenizer's end-of-text token and at the style's next-turn marker (PARAMETER stop lines).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scratchgpt.data.instructions import PROMPT_STYLES
from scratchgpt.errors import ConfigError
from scratchgpt.fileio import PathLike, atomic_write_text

MODELFILE = "Modelfile"


def _quote(text: str) -> str:
    """A Modelfile string: triple quotes hold newlines (and cannot hold triple quotes)."""
    if '"""' in text:
        raise ConfigError(f'a Modelfile value cannot contain """: {text!r}')
    return f'"""{text}"""' if "\n" in text or '"' in text else f'"{text}"'


def ollama_template(metadata: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """The Go TEMPLATE for a checkpoint's prompt style and the stop strings it adds."""
    style_name = (metadata or {}).get("prompt_style")
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
    gguf_name: str, tokenizer: Any, metadata: Mapping[str, Any] | None = None
) -> str:
    """The Modelfile's text for ``gguf_name`` (the .gguf file beside it)."""
    template, stops = ollama_template(metadata)
    eot = getattr(tokenizer, "eot_id", None)
    if eot is not None:
        stops.append(tokenizer.decode([eot]))
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(template)}"]
    lines += [f"PARAMETER stop {_quote(s)}" for s in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def write_modelfile(
    gguf_path: PathLike,
    tokenizer: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``Modelfile`` beside ``gguf_path`` (atomically; refuses to replace one unless
    ``overwrite``) and return its path."""
    gguf_path = Path(gguf_path)
    text = modelfile_text(gguf_path.name, tokenizer, metadata)
    return atomic_write_text(gguf_path.with_name(MODELFILE), text, overwrite=overwrite)
