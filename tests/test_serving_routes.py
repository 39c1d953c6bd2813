"""Routes and their helpers called alone: no app, no HTTP server; dependencies passed in."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fastapi")

from scratchgpt.config import GPTConfig
from scratchgpt.generation import generate_text
from scratchgpt.model import GPTModel
from scratchgpt.serving import routes
from scratchgpt.serving.engine import Engine
from scratchgpt.serving.errors import APIError, error_response
from scratchgpt.serving.model import ServedModel
from scratchgpt.serving.schemas import ChatRequest, CompletionRequest
from scratchgpt.tokenizers import get_tokenizer


@pytest.fixture(scope="module")
def served() -> ServedModel:
    torch.set_num_threads(1)
    torch.manual_seed(1)
    cfg = GPTConfig.from_preset("tiny", vocab_size=50257, context_length=32)
    return ServedModel("tiny", GPTModel(cfg).eval(), get_tokenizer("gpt2"), created=7)


class Connected:
    """A request whose client never goes away."""

    async def is_disconnected(self) -> bool:
        return False


def request_with(api_key: str | None, authorization: str | None = None) -> SimpleNamespace:
    headers = {} if authorization is None else {"authorization": authorization}
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(api_key=api_key)),
                           headers=headers)  # fmt: skip


def run_with_engine(make_call):
    """Run ``make_call(engine)`` on a fresh engine inside an event loop."""
    engine = Engine(max_queue=2, timeout=30)

    async def main():
        try:
            return await make_call(engine)
        finally:
            engine.stop()

    return asyncio.run(main())


def test_models_and_health_alone(served):
    assert asyncio.run(routes.list_models(served=served)) == {
        "object": "list",
        "data": [{"id": "tiny", "object": "model", "created": 7, "owned_by": "scratchgpt"}],
    }
    assert asyncio.run(routes.get_model("tiny", served=served))["id"] == "tiny"
    with pytest.raises(APIError) as e:
        asyncio.run(routes.get_model("gpt-4", served=served))
    assert e.value.status == 404 and e.value.code == "model_not_found"
    health = asyncio.run(routes.health(served=served, engine=Engine(max_queue=3)))
    assert health["status"] == "ok" and health["max_queue"] == 3 and health["queued"] == 0


def test_check_key_alone():
    routes.check_key(request_with(None))  # no key: everything passes
    routes.check_key(request_with("k", "Bearer k"))
    for header, code in ((None, "missing_api_key"), ("Bearer x", "invalid_api_key")):
        with pytest.raises(APIError) as e:
            routes.check_key(request_with("k", header))
        assert e.value.status == 401 and e.value.code == code


def test_completion_route_alone_equals_generate_text(served):
    body = CompletionRequest(prompt="Every effort moves you", max_tokens=5, temperature=0)
    out = run_with_engine(
        lambda eng: routes.completions(body, Connected(), served=served, engine=eng)
    )
    want = generate_text(served.model, served.tokenizer, body.prompt, 5)
    assert out["object"] == "text_completion" and out["model"] == "tiny"
    assert out["choices"][0]["text"] == want
    assert out["usage"]["prompt_tokens"] == len(served.tokenizer.encode(body.prompt))


def test_chat_route_alone_streams_server_sent_events(served):
    body = ChatRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                       temperature=0, stream=True)  # fmt: skip

    async def call(eng):
        response = await routes.chat_completions(body, Connected(), served=served, engine=eng)
        return [chunk async for chunk in response.body_iterator]

    events = run_with_engine(call)
    assert events[-1] == "data: [DONE]\n\n"
    first = json.loads(events[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(
        json.loads(e[len("data: ") :])["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
    )
    assert text == generate_text(served.model, served.tokenizer, "Hi", 3)


def test_request_checks_alone(served):
    ids = [[1] * 30]
    assert routes.token_budget(served, ids, None, 16, "prompt") == 2  # cut to what fits
    with pytest.raises(APIError, match="at most 2") as e:
        routes.token_budget(served, ids, 5, 16, "prompt")
    assert e.value.code == "context_length_exceeded" and e.value.param == "max_tokens"
    body = CompletionRequest(prompt="x", stop=["a", "b", "c", "d", "e"])
    with pytest.raises(APIError, match="at most 4"):
        routes.stop_strings(body, [])
    assert routes.stop_strings(CompletionRequest(prompt="x", stop="a"), ["z"]) == ["a", "z"]
    sampling = routes.sampling_of(CompletionRequest(prompt="x", top_p=1.0, seed=3))
    assert sampling.top_p is None and sampling.seed == 3 and sampling.temperature == 1.0


def test_api_error_response_in_openai_shape():
    r = error_response(APIError(503, "busy", "server_error", code="queue_full",
                                headers={"Retry-After": "2"}))  # fmt: skip
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert json.loads(r.body) == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "queue_full"}
    }
