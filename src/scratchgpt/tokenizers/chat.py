"""Chat templates: a conversation -> the prompt text a chat model was trained on.

A Hugging Face model folder carries its prompt format as a Jinja template (``chat_template`` in
tokenizer_config.json, or ``chat_template.jinja``). :class:`ChatTemplate` renders such a template
exactly as ``transformers``' ``apply_chat_template(..., tokenize=False)`` does: the same sandboxed
Jinja environment (``trim_blocks``, ``lstrip_blocks``, loop controls), the same helpers
(``raise_exception``, a ``tojson`` that does not escape HTML, ``strftime_now``) and the same
variables (``messages``, ``add_generation_prompt``, ``tools``, ``documents``, the special-token
strings). An unknown template is rendered by the template itself, never guessed.

Models without a template of their own (a Llama-, Qwen- or Gemma-shaped model pretrained here, a
base model) can use a bundled family default: :data:`LLAMA3_TEMPLATE` (Llama 3 header tokens),
:data:`CHATML_TEMPLATE` (Qwen's ChatML) or :data:`GEMMA_TEMPLATE` (Gemma's turns), looked up by
:func:`family_template`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scratchgpt.errors import TokenizerError

# Llama 3.x: <|begin_of_text|>, then per message a header (role between <|start_header_id|> and
# <|end_header_id|>, a blank line) and the trimmed content closed by <|eot_id|>.
LLAMA3_TEMPLATE = """\
{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
    {{- message['content'] | trim }}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# ChatML (Qwen): per message <|im_start|>role, a newline, the content, <|im_end|> and a newline.
# Like Qwen3's own template, enable_thinking=False opens the answer with an empty think block.
CHATML_TEMPLATE = """\
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# Gemma: <bos>, then per message <start_of_turn>role, a newline, the trimmed content,
# <end_of_turn> and a newline. The assistant's role is written "model". Gemma has no system role:
# as Gemma 3's own template does, a first system message goes at the start of the first user
# turn (a blank line after it), and the turns must then alternate user/assistant. Renders what
# Gemma 3's template renders for text conversations.
GEMMA_TEMPLATE = """\
{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set first_user_prefix = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {%- set position = loop.index0 + 1 + messages | length - loop_messages | length %}
        {{- raise_exception("Gemma's turns must alternate user/assistant/user/... after an "
            "optional first system message; message " + position | string + " is the "
            + message['role'] + "'s") }}
    {%- endif %}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}
    {{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<start_of_turn>model\\n' }}
{%- endif %}
"""

FAMILY_TEMPLATES = {"llama3": LLAMA3_TEMPLATE, "chatml": CHATML_TEMPLATE, "gemma": GEMMA_TEMPLATE}

# The names a message's reasoning may come under; templates read "reasoning_content" (gpt-oss
# templates read "thinking"), so each is filled from the others, as transformers does.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def family_template(name: str) -> str:
    """The bundled template of a prompt-format family: ``"llama3"``, ``"chatml"`` (Qwen) or
    ``"gemma"``."""
    try:
        return FAMILY_TEMPLATES[name]
    except KeyError:
        raise TokenizerError(
            f"unknown chat template family {name!r}; choose one of {', '.join(FAMILY_TEMPLATES)}"
        ) from None


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (marks assistant text in training templates):
    rendered as its body, so templates that use it compile."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's own class attribute)

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, '), which would change the prompt.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` for templates without handing them the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` refusing underscore-prefixed names (a way into Python internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed names on a namespace ({name!r})"
            )


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Chat templates come with downloaded models: untrusted code, hence the immutable sandbox.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    return env


def _plain(value: Any) -> Any:
    """`value` rebuilt from plain JSON types (what the sandboxed template may see)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums...) could carry methods: strip them
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _messages(messages: Sequence[Mapping[str, Any]], origin: str) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TokenizerError(
                f"{origin}: message {i} is a {type(message).__name__}, expected a mapping with "
                "'role' and 'content'"
            )
        # Keys set to None are dropped (an API's content=None), as transformers does.
        plain = {k: _plain(v) for k, v in message.items() if v is not None}
        reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


class ChatTemplate:
    """A compiled chat template.

    ``source`` is the Jinja text; ``bos_token``/``eos_token`` (and ``pad_token``) are the
    special-token strings templates read (``{{ bos_token }}``); None leaves them undefined, as
    for a tokenizer without that token. ``origin`` names where the template came from (a file,
    a folder, a family) in error messages. Syntax errors are reported here, at construction.
    """

    def __init__(
        self,
        source: str,
        *,
        bos_token: str | None = "",
        eos_token: str | None = "",
        pad_token: str | None = None,
        origin: str = "chat template",
    ) -> None:
        if not isinstance(source, str):
            raise TokenizerError(f"{origin}: expected the template's Jinja text (a string)")
        self.source = source
        self.origin = origin
        self.special_tokens = {
            k: v
            for k, v in (
                ("bos_token", bos_token),
                ("eos_token", eos_token),
                ("pad_token", pad_token),
            )
            if v is not None
        }
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TokenizerError(
                f"{origin}: Jinja syntax error on line {e.lineno}: {e.message}; fix the template "
                "or give the model another one"
            ) from None

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages` (dicts with "role" and "content").

        ``add_generation_prompt`` appends the opening of an assistant turn, for the model to
        complete. ``extra`` become template variables (``enable_thinking=False``, ``tools=[...]``,
        ``date_string="26 Jul 2024"``); they override the special tokens of the same name.
        """
        if not messages:
            raise TokenizerError(f"{self.origin}: cannot render an empty conversation")
        variables: dict[str, Any] = {"tools": None, "documents": None}
        variables.update(self.special_tokens)
        variables.update({k: _plain(v) for k, v in extra.items()})
        variables["messages"] = _messages(messages, self.origin)
        variables["add_generation_prompt"] = add_generation_prompt
        try:
            return self._template.render(**variables)
        except jinja2.TemplateError as e:
            raise TokenizerError(f"{self.origin}: {_one_line(e)}") from None
        except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError) as e:
            # A template can fail like any program ('a' + 1, a missing key); say where.
            raise TokenizerError(
                f"{self.origin}: the template failed on this conversation: "
                f"{type(e).__name__}: {_one_line(e)}"
            ) from None

    def render_example(
        self, messages: Sequence[Mapping[str, Any]], **extra: Any
    ) -> tuple[str, str]:
        """A training example: (prompt, response) for a conversation ending with the assistant.

        The prompt is the conversation before the last message plus the generation prompt (what
        the model sees at inference); the response is the rest of the full rendering: the last
        answer and its end-of-turn tokens, which instruction fine-tuning trains on. A template
        that renders earlier turns differently once an answer follows cannot be split this way:
        that is an error.
        """
        if not messages or messages[-1].get("role") != "assistant":
            raise TokenizerError(
                f"{self.origin}: a training example must end with an assistant message"
            )
        prompt = self.render(messages[:-1], add_generation_prompt=True, **extra)
        full = self.render(messages, add_generation_prompt=False, **extra)
        if not full.startswith(prompt):
            raise TokenizerError(
                f"{self.origin}: the conversation rendered with its answer does not start with "
                "the prompt rendered without it, so prompt and response cannot be told apart; "
                "use a template that renders earlier turns the same way"
            )
        return prompt, full[len(prompt) :]

    def __repr__(self) -> str:
        return f"ChatTemplate(origin={self.origin!r}, {len(self.source)} characters)"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
