"""Chat templates render exactly as transformers' apply_chat_template does (it is the oracle).

Each template is put in a tokenizer folder built offline (tests/hf_fixtures.py); transformers
loads the folder and renders the same conversations. The templates: our bundled family defaults,
Gemma 3's own (system folded into the first user turn, alternation checked) and two full-featured
ones in tests/chat_templates/ (Qwen3-like: tools, thinking, namespaces, reverse loops; Llama
3.1-like: dates, tools as JSON, raise_exception).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_fixtures import (
    GEMMA3_CHAT_TEMPLATE,
    write_gemma3_tokenizer,
    write_llama3_tokenizer,
    write_qwen3_tokenizer,
)
from scratchgpt.errors import TokenizerError
from scratchgpt.tokenizers import HFTokenizer
from scratchgpt.tokenizers.chat import (
    CHATML_TEMPLATE,
    GEMMA_TEMPLATE,
    LLAMA3_TEMPLATE,
    ChatTemplate,
    family_template,
)

transformers = pytest.importorskip("transformers")

HERE = Path(__file__).parent / "chat_templates"
QWEN3_STYLE = (HERE / "qwen3_style.jinja").read_text(encoding="utf-8")
LLAMA31_STYLE = (HERE / "llama31_style.jinja").read_text(encoding="utf-8")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city <now> & 'today'",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "e.g. Paris"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello there!"}],
    "system+user": [
        {"role": "system", "content": "You are a helpful assistant.  "},
        {"role": "user", "content": "  What is 2+2? "},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another, in 日本語 😀?"},
        {"role": "assistant", "content": "赤 (red)."},
        {"role": "user", "content": "Thanks\nbye"},
    ],
    "ends-with-assistant": [
        {"role": "user", "content": "Say <b>hi</b> & 'bye'"},
        {"role": "assistant", "content": "hi & bye"},
    ],
}

QWEN_EXTRA = {
    "thinking": [
        {"role": "user", "content": "Is 7 prime?"},
        {"role": "assistant", "content": "<think>\nDivisors: 1, 7.\n</think>\n\nYes."},
        {"role": "user", "content": "And 9?"},
        {"role": "assistant", "content": "No.", "reasoning_content": "3 x 3 = 9"},
    ],
    "tool-calls": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "content": "18C"},
        {"role": "tool", "content": "25C"},
        {"role": "assistant", "content": "Paris 18C, Rome 25C.", "reasoning_content": None},
    ],
}

LLAMA_EXTRA = {
    "tool-call": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": {"temperature": 18}},
        {"role": "assistant", "content": "18C."},
    ],
}


WRITERS = {
    "llama3": write_llama3_tokenizer,
    "qwen3": write_qwen3_tokenizer,
    "gemma3": write_gemma3_tokenizer,
}


def _oracle_folder(tmp_path: Path, family: str, template: str) -> Path:
    folder = tmp_path / family
    WRITERS[family](folder, chat_template=template)
    return folder


CASES = [
    ("llama3", "bundled-llama3", LLAMA3_TEMPLATE, CONVERSATIONS),
    ("qwen3", "bundled-chatml", CHATML_TEMPLATE, CONVERSATIONS),
    ("qwen3", "qwen3-style", QWEN3_STYLE, {**CONVERSATIONS, **QWEN_EXTRA}),
    ("llama3", "llama31-style", LLAMA31_STYLE, {**CONVERSATIONS, **LLAMA_EXTRA}),
    ("gemma3", "gemma3-own", GEMMA3_CHAT_TEMPLATE, CONVERSATIONS),
    ("gemma3", "bundled-gemma", GEMMA_TEMPLATE, CONVERSATIONS),
]


@pytest.mark.parametrize(("family", "label", "template", "conversations"), CASES)
def test_rendering_equals_transformers(tmp_path, family, label, template, conversations):
    folder = _oracle_folder(tmp_path, family, template)
    oracle = transformers.AutoTokenizer.from_pretrained(folder)
    ours = HFTokenizer.from_folder(folder)
    variants = [{}, {"date_string": "26 Jul 2024"}, {"enable_thinking": False}]
    for name, messages in conversations.items():
        for add in (True, False):
            for extra in variants:
                want = oracle.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add, **extra
                )
                got = ours.render_chat(messages, add_generation_prompt=add, **extra)
                if "date_string" not in extra and "strftime_now" in template and got != want:
                    continue  # the date changed between the two renderings (midnight)
                assert got == want, (label, name, add, extra)
                ids = oracle.apply_chat_template(
                    messages, tokenize=True, add_generation_prompt=add, return_dict=False, **extra
                )
                if "date_string" in extra or "strftime_now" not in template:
                    assert ours.encode_chat(messages, add_generation_prompt=add, **extra) == ids


@pytest.mark.parametrize("template", [QWEN3_STYLE, LLAMA31_STYLE])
def test_tools_render_as_transformers(tmp_path, template):
    family = "qwen3" if template is QWEN3_STYLE else "llama3"
    folder = _oracle_folder(tmp_path, family, template)
    oracle = transformers.AutoTokenizer.from_pretrained(folder)
    ours = HFTokenizer.from_folder(folder)
    messages = CONVERSATIONS["system+user"]
    extra = {"date_string": "01 Jan 2025"}
    want = oracle.apply_chat_template(
        messages, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True, **extra
    )
    got = ours.render_chat(messages, tools=[WEATHER_TOOL], **extra)
    assert got == want
    assert "<now> & 'today'" in got  # tojson leaves HTML characters alone


def test_bundled_llama3_format():
    rendered = ChatTemplate(LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>").render(
        CONVERSATIONS["system+user"]
    )
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_bundled_chatml_format():
    template = ChatTemplate(CHATML_TEMPLATE)
    messages = [{"role": "user", "content": "Hi"}]
    assert template.render(messages) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert template.render(messages, add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n"
    )
    assert template.render(messages, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_bundled_gemma_format():
    template = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>")
    messages = [*CONVERSATIONS["system+user"], {"role": "assistant", "content": " 4 "}]
    assert template.render(messages[:2]) == (
        "<bos><start_of_turn>user\nYou are a helpful assistant.  \n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # The assistant's turn is the "model"'s; a training example splits where it opens.
    prompt, response = template.render_example(messages)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert response == "4<end_of_turn>\n"


@pytest.mark.parametrize(
    ("messages", "position"),
    [
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 2 is the user's",
        ),
        (
            [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
            "message 2 is the assistant's",
        ),
    ],
)
def test_bundled_gemma_refuses_turns_that_do_not_alternate(messages, position):
    template = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>", origin="gemma")
    with pytest.raises(TokenizerError, match=rf"^gemma: Gemma's turns must alternate.*{position}"):
        template.render(messages)


def test_family_template_lookup():
    assert family_template("llama3") is LLAMA3_TEMPLATE
    assert family_template("chatml") is CHATML_TEMPLATE
    assert family_template("gemma") is GEMMA_TEMPLATE
    with pytest.raises(TokenizerError, match=r"unknown chat template family 'mistral'.*chatml"):
        family_template("mistral")


def test_raise_exception_becomes_a_tokenizer_error_naming_the_origin(tmp_path):
    folder = tmp_path / "q"
    write_qwen3_tokenizer(folder, chat_template=QWEN3_STYLE)
    tok = HFTokenizer.from_folder(folder)
    with pytest.raises(TokenizerError, match=r"chat template: unknown role narrator") as info:
        tok.render_chat([{"role": "narrator", "content": "Once upon a time"}])
    assert str(folder) in str(info.value)
    assert "\n" not in str(info.value)


def test_syntax_error_names_origin_and_line():
    source = "{% for m in messages %}\n{{ m.content }\n{% endfor %}"
    with pytest.raises(TokenizerError, match=r"my.jinja: Jinja syntax error on line 2"):
        ChatTemplate(source, origin="my.jinja")


def test_a_failing_template_is_a_tokenizer_error():
    template = ChatTemplate("{{ messages[0].content + 1 }}", origin="t")
    with pytest.raises(TokenizerError, match=r"^t: "):
        template.render([{"role": "user", "content": "x"}])
    with pytest.raises(TokenizerError, match="empty conversation"):
        template.render([])
    with pytest.raises(TokenizerError, match="message 0 is a str"):
        template.render(["hello"])


def test_the_sandbox_holds():
    escape = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(TokenizerError, match=r"unsafe|access"):
        ChatTemplate(escape).render([{"role": "user", "content": "x"}])
    underscore = "{% set ns = namespace(_x=1) %}{{ ns._x }}"
    with pytest.raises(TokenizerError, match="underscore"):
        ChatTemplate(underscore).render([{"role": "user", "content": "x"}])


def test_generation_tag_and_helpers_match_transformers(tmp_path):
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}"
        "{{ m.content }}{% endgeneration %}{% else %}{{ m.content | tojson(indent=2) }}"
        "{% endif %}{% if loop.index0 == 0 %}{% continue %}{% endif %}|{% endfor %}"
        "{{ dict(a=1) | tojson(sort_keys=true) }}{{ bos_token }}{{ eos_token }}{{ pad_token }}"
    )
    folder = _oracle_folder(tmp_path, "qwen3", template)
    oracle = transformers.AutoTokenizer.from_pretrained(folder)
    messages = [
        {"role": "user", "content": 'a <b> "c"'},
        {"role": "assistant", "content": "d", "tool_calls": None},
        {"role": "user", "content": "é"},
    ]
    want = oracle.apply_chat_template(messages, tokenize=False)
    assert (
        HFTokenizer.from_folder(folder).render_chat(messages, add_generation_prompt=False) == want
    )


@pytest.mark.parametrize(("family", "label", "template", "conversations"), CASES)
def test_training_examples_split_into_prompt_and_response(
    tmp_path, family, label, template, conversations
):
    folder = _oracle_folder(tmp_path, family, template)
    oracle = transformers.AutoTokenizer.from_pretrained(folder)
    chat = HFTokenizer.from_folder(folder).chat
    extra = {"date_string": "26 Jul 2024"}
    for name, messages in conversations.items():
        if messages[-1]["role"] != "assistant":
            continue
        prompt, response = chat.render_example(messages, **extra)
        assert prompt == oracle.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True, **extra
        ), (label, name)
        full = oracle.apply_chat_template(messages, tokenize=False, **extra)
        assert prompt + response == full, (label, name)
        assert response.rstrip().endswith(("<|eot_id|>", "<|im_end|>", "<end_of_turn>")), (
            label,
            name,
        )


def test_training_example_errors():
    chat = ChatTemplate(CHATML_TEMPLATE, origin="chatml")
    with pytest.raises(TokenizerError, match="must end with an assistant message"):
        chat.render_example([{"role": "user", "content": "x"}])
    # A template that writes the turn count first renders the prompt differently.
    counting = ChatTemplate(
        "{{ messages | length }}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(TokenizerError, match="cannot be told apart"):
        counting.render_example(messages)
