"""Chat requests whose history no longer fits the context: the server drops the oldest turns
(as `scratchgpt chat` does), says how many messages it dropped, and can be told not to."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from scratchgpt.config import GPTConfig
from scratchgpt.data.prompts import render_chat
from scratchgpt.model import GPTModel
from scratchgpt.serving import create_app
from scratchgpt.serving.model import ServedModel
from scratchgpt.tokenizers import get_tokenizer

CONTEXT = 64


@pytest.fixture(scope="module")
def served() -> ServedModel:
    torch.set_num_threads(1)
    torch.manual_seed(1)
    cfg = GPTConfig.from_preset("tiny", vocab_size=50257, context_length=CONTEXT)
    return ServedModel("tiny", GPTModel(cfg).eval(), get_tokenizer("gpt2"), style="alpaca")


def conversation(turns: int) -> list[dict[str, str]]:
    """A system message, ``turns`` question/answer pairs, then a last question."""
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question number {i} about the sea?"})
        messages.append({"role": "assistant", "content": f"Answer number {i}: it is blue."})
    messages.append({"role": "user", "content": "And the sky?"})
    return messages


def tokens(served: ServedModel, messages: list[dict[str, str]]) -> int:
    pairs = [(m["role"], m["content"]) for m in messages]
    return len(served.tokenizer.encode(render_chat(pairs, served.style)))


def ask(client: TestClient, messages, **extra):
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_the_oldest_turns_are_dropped_until_the_reply_fits(served):
    messages = conversation(4)
    assert tokens(served, messages) + 8 > CONTEXT  # the whole history does not fit
    with TestClient(create_app(served)) as client:
        r = ask(client, messages)
        assert r.status_code == 200, r.text
        out = r.json()
        dropped = out["truncated_messages"]
        same = ask(client, [messages[0], *messages[1 + dropped :]], truncate_history=False)
    # The reply is the one to the shortened conversation.
    assert same.json()["choices"] == out["choices"]
    assert dropped > 0 and dropped % 2 == 0  # whole turns: a question and its answer
    kept = [messages[0], *messages[1 + dropped :]]
    assert tokens(served, kept) + 8 <= CONTEXT
    # As few as possible: one more turn would not have fitted.
    assert tokens(served, [messages[0], *messages[dropped - 1 :]]) + 8 > CONTEXT


def test_nothing_is_dropped_when_it_fits(served):
    with TestClient(create_app(served)) as client:
        r = ask(client, conversation(0))
    assert r.status_code == 200 and r.json()["truncated_messages"] == 0


def test_a_stream_reports_the_dropped_messages_in_its_first_chunk(served):
    with TestClient(create_app(served)) as client:
        r = ask(client, conversation(4), stream=True)
    assert r.status_code == 200
    first = json.loads(r.text.split("\n\n")[0][len("data: ") :])
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["truncated_messages"] > 0


def test_truncation_can_be_turned_off_per_request_or_for_the_server(served):
    with TestClient(create_app(served)) as client:
        r = ask(client, conversation(4), truncate_history=False)
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    with TestClient(create_app(served, truncate_history=False)) as client:
        r = ask(client, conversation(4))
        assert r.status_code == 400
        assert "truncate_history" in r.json()["error"]["message"]
        r = ask(client, conversation(4), truncate_history=True)
        assert r.status_code == 200 and r.json()["truncated_messages"] > 0


def test_a_last_message_too_long_alone_is_still_refused(served):
    long = [{"role": "user", "content": "word " * 80}]
    with TestClient(create_app(served)) as client:
        r = ask(client, long)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    with TestClient(create_app(served, truncate_history=False)) as client:
        r = ask(client, long)
    # Dropping turns would not help: the message does not suggest it.
    assert r.status_code == 400 and "truncate_history" not in r.json()["error"]["message"]


def test_cli_flag_turns_truncation_off():
    import argparse

    from scratchgpt.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    assert parser.parse_args(["serve", "--checkpoint", "x"]).truncate_history is True
    args = parser.parse_args(["serve", "--checkpoint", "x", "--no-truncate-history"])
    assert args.truncate_history is False
