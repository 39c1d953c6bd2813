"""The ``chat`` prompt style: a model's own chat template (Llama 3's header tokens, Qwen's ChatML)
as the prompt style of instruction tuning, chat, serving and responses.

An instruction record becomes one user message (the instruction, then the input after a blank
line) and, for training, the assistant's answer; the template renders them exactly as
``transformers``' ``apply_chat_template`` does. Its text holds control tokens
(``<|im_start|>``), which are encoded as special tokens (:func:`encode_styled`), and a reply
ends with the template's end-of-turn token, which the tokenizer's ``stop_ids`` stop at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHAT_STYLE = "chat"
# The style a model calls for: chat when its tokenizer has a chat template, else alpaca.
AUTO_STYLE = "auto"


def user_content(entry: Mapping[str, str]) -> str:
    """The user's message for an instruction record: the instruction, then its input."""
    text = entry["instruction"]
    return f"{text}\n\n{entry['input']}" if entry.get("input") else text


@dataclass(frozen=True)
class ChatPromptStyle:
    """A prompt style backed by a chat template (a :class:`scratchgpt.tokenizers.ChatTemplate`).

    It answers what a :class:`~scratchgpt.data.instructions.PromptStyle` answers. There is no
    text marker: the prompt ends with the template's generation prompt, and the reply ends at an
    end-of-turn token (a stop id), so ``marker`` and ``turn_start`` are empty.
    """

    template: Any
    name: str = CHAT_STYLE
    marker: str = ""
    turn_start: str = ""
    special_tokens: bool = True  # its text holds control tokens, encoded as special tokens

    def messages(self, entry: Mapping[str, str]) -> list[dict[str, str]]:
        return [{"role": "user", "content": user_content(entry)}]

    def prompt(self, entry: Mapping[str, str]) -> str:
        """The conversation up to the assistant's turn (the generation prompt included)."""
        return self.template.render(self.messages(entry), add_generation_prompt=True)

    def format_input(self, entry: Mapping[str, str]) -> str:
        # A chat model is always prompted up to its turn: the book's "instruction and input
        # alone" is the same prompt here.
        return self.prompt(entry)

    def full_text(self, entry: Mapping[str, str]) -> str:
        """Prompt and answer, the answer closed by the template's end-of-turn tokens."""
        messages = [*self.messages(entry), {"role": "assistant", "content": entry["output"]}]
        prompt, response = self.template.render_example(messages)
        return prompt + response

    def render_messages(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """A whole conversation (OpenAI-style role/content messages) in the template."""
        return self.template.render(messages, add_generation_prompt=add_generation_prompt)


def encode_styled(tokenizer: Any, text: str, style: Any) -> list[int]:
    """Token ids of a text rendered in ``style``: a chat template's control tokens are encoded
    as the special tokens they are; other styles' text is ordinary text."""
    if getattr(style, "special_tokens", False):
        return list(tokenizer.encode(text, allowed_special="all"))
    return list(tokenizer.encode(text))
