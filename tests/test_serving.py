"""The HTTP server, tested live: a uvicorn server on a free 127.0.0.1 port, driven with the
official `openai` client and raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
try:  # raw HTTP: httpx, or httpx2 (what newer `openai` releases use)
    import httpx
except ImportError:
    httpx = pytest.importorskip("httpx2")

from scratchgpt.config import GPTConfig  # noqa: E402
from scratchgpt.data.prompts import render_chat  # noqa: E402
from scratchgpt.generation import SamplingConfig, generate, generate_text  # noqa: E402
from scratchgpt.serving import create_app, load_served_model  # noqa: E402
from scratchgpt.serving.model import run_generation  # noqa: E402

CONTEXT = 64


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class LiveServer:
    """A uvicorn server for ``app`` on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, app):
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, api_key: str = "unused", **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs
        )


def make_checkpoints(root: Path, context: int = CONTEXT) -> dict[str, Path]:
    """A tiny random base model, the same weights as an alpaca instruction model, and a
    two-label classifier, all with GPT-2's tokenizer and a ``context``-token window."""
    from scratchgpt.model import GPTModel
    from scratchgpt.tasks.classify import classifier_metadata, make_classifier
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    tok = get_tokenizer("gpt2")
    cfg = GPTConfig.from_preset("tiny", vocab_size=50257, context_length=context)
    torch.manual_seed(1)
    model = GPTModel(cfg)
    paths = {"base": root / "base", "instruct": root / "instruct", "clf": root / "clf"}
    save_checkpoint(paths["base"], model, tok)
    save_checkpoint(paths["instruct"], model, tok, metadata={"prompt_style": "alpaca"})
    torch.manual_seed(2)
    clf = make_classifier(GPTModel(cfg), 2, trainable="all")
    meta = classifier_metadata(["ham", "spam"], min(32, context), 50256, trainable="all")
    save_checkpoint(paths["clf"], clf, tok, metadata=meta)
    return paths


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def base(ckpts):
    return load_served_model(ckpts["base"])


@pytest.fixture(scope="module")
def live(base):
    with LiveServer(create_app(base, max_body_bytes=20_000)) as server:
        yield server


@pytest.fixture(scope="module")
def live_instruct(ckpts):
    served = load_served_model(ckpts["instruct"])
    with LiveServer(create_app(served)) as server:
        yield server, served


def expected(served, prompt: str, n: int, **kw) -> str:
    return generate_text(served.model, served.tokenizer, prompt, max_new_tokens=n, **kw)


PROMPTS = [
    "Every effort moves you",
    "The quick brown fox",
    "In the beginning",
    "Hello, I am",
    "Once upon a time",
    "The capital of France",
    "To be or not",
    "A B C D",
]


# ---------------------------------------------------------------------------------------------
# The API through the official client


def test_models_and_health(live, base):
    client = live.client()
    models = client.models.list()
    assert [m.id for m in models.data] == [base.name] == ["base"]
    assert client.models.retrieve("base").id == "base"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4")
    health = httpx.get(live.url + "/health").json()
    assert health["status"] == "ok" and health["kind"] == "completion"
    assert health["api_key_required"] is False


def test_greedy_completion_equals_generate(live, base):
    client = live.client()
    prompt = PROMPTS[0]
    resp = client.completions.create(model="base", prompt=prompt, max_tokens=12, temperature=0)
    assert resp.choices[0].text == expected(base, prompt, 12)
    ids = base.tokenizer.encode(prompt)
    out = generate(base.model, torch.tensor([ids]), 12, eos_id=base.tokenizer.eot_id)
    assert resp.usage.prompt_tokens == len(ids)
    assert resp.usage.completion_tokens == out.shape[1] - len(ids)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.choices[0].finish_reason == "length"
    assert resp.object == "text_completion" and resp.model == "base"


def test_completion_of_a_list_of_prompts_with_n_and_seed(live, base):
    client = live.client()
    resp = client.completions.create(
        model="base", prompt=PROMPTS[:2], max_tokens=6, temperature=1.0, n=2, seed=7
    )
    assert [c.index for c in resp.choices] == [0, 1, 2, 3]
    for c in resp.choices:
        prompt, j = PROMPTS[c.index // 2], c.index % 2
        assert c.text == expected(base, prompt, 6, temperature=1.0, seed=7 + j)
    again = client.completions.create(
        model="base", prompt=PROMPTS[:2], max_tokens=6, temperature=1.0, n=2, seed=7
    )
    assert [c.text for c in again.choices] == [c.text for c in resp.choices]


def test_stop_strings(live, base):
    client = live.client()
    full = expected(base, PROMPTS[1], 12)
    stop = full[3:6]
    assert stop.strip()
    resp = client.completions.create(
        model="base", prompt=PROMPTS[1], max_tokens=12, temperature=0, stop=[stop]
    )
    assert resp.choices[0].text == full[: full.find(stop)]
    assert resp.choices[0].finish_reason == "stop"


def test_streaming_completion_and_chat(live, base):
    client = live.client()
    stream = client.completions.create(
        model="base",
        prompt=PROMPTS[2],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected(base, PROMPTS[2], 10)
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) >= 2  # token by token
    assert chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    stream = client.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": PROMPTS[3]}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    # A base model's chat prompt is the plain concatenation of the messages.
    assert text == expected(base, PROMPTS[3], 8)


def test_raw_stream_ends_with_done(live):
    body = {"prompt": "Hi", "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_chat_uses_the_checkpoint_prompt_style(live_instruct):
    from scratchgpt.chat import ChatSession

    server, served = live_instruct
    client = server.client()
    messages = [{"role": "user", "content": "Name a colour."}]
    resp = client.chat.completions.create(
        model="instruct", messages=messages, max_tokens=10, temperature=0
    )
    session = ChatSession(served.model, served.tokenizer, "alpaca", max_new_tokens=10)
    prompt = session.build_prompt("Name a colour.")
    assert render_chat([("user", "Name a colour.")], "alpaca") == prompt
    want = generate_text(
        served.model, served.tokenizer, prompt, 10, stop_strings=["### Instruction:"]
    )
    assert resp.choices[0].message.content == want
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage.prompt_tokens == len(served.tokenizer.encode(prompt))
    # Earlier turns come first, each as ChatSession writes its history.
    two = [("user", "Name a colour."), ("assistant", "Blue"), ("user", "Another?")]
    assert render_chat(two, "alpaca") == (
        session._turn("Name a colour.", "Blue") + "\n\n" + session._turn("Another?", None)
    )
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}],
        }
    ]
    again = client.chat.completions.create(
        model="instruct", messages=parts, max_tokens=10, temperature=0
    )
    assert again.choices[0].message.content == want
    system = [("system", "Be brief."), ("user", "Hi")]
    assert render_chat(system, "alpaca") == "Be brief.\n\n" + session._turn("Hi", None)


def test_eight_concurrent_clients_get_their_own_answers(live, base):
    want = {p: expected(base, p, 16) for p in PROMPTS}

    def ask(prompt: str) -> tuple[str, str]:
        client = live.client()
        if PROMPTS.index(prompt) % 2:  # half stream, half do not: both paths at once
            stream = client.completions.create(
                model="base", prompt=prompt, max_tokens=16, temperature=0, stream=True
            )
            return prompt, "".join(c.choices[0].text for c in stream if c.choices)
        resp = client.completions.create(model="base", prompt=prompt, max_tokens=16, temperature=0)
        return prompt, resp.choices[0].text

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(ask, PROMPTS))
    assert got == want


# ---------------------------------------------------------------------------------------------
# Errors


def test_errors_in_openai_shape(live):
    client = live.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match=f"maximum context length is {CONTEXT}") as e:
        client.completions.create(model="base", prompt="Hello", max_tokens=500)
    assert "at most 63" in str(e.value)  # "Hello" is one token
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=1000
        )
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="base", prompt="x", temperature=5)
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.completions.create(model="base", prompt="", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(
            model="base", messages=[{"role": "assistant", "content": "Hi"}]
        )

    r = httpx.post(
        live.url + "/v1/completions",
        content=b'{"prompt": "x", ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(live.url + "/v1/completions", json={"prompt": 3})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "prompt" and err["type"] == "invalid_request_error"
    r = httpx.post(live.url + "/v1/completions", json={"prompt": "x", "max_tokens": "many"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = httpx.get(live.url + "/v1/nothing")
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]


def test_body_size_limit(live):
    big = {"prompt": "word " * 5000, "max_tokens": 1}  # over the test server's 20,000 bytes
    r = httpx.post(live.url + "/v1/completions", json=big)
    assert r.status_code == 413
    assert "20000 bytes" in r.json()["error"]["message"]

    # Without a Content-Length header (chunked upload) the limit still holds.
    def chunks():
        for _ in range(30):
            yield b" " * 1000

    r = httpx.post(
        live.url + "/v1/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_api_key(base):
    with LiveServer(create_app(base, api_key="s3cret")) as server:
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            server.client("wrong").models.list()
        r = httpx.get(server.url + "/v1/models")
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert "Authorization: Bearer" in r.json()["error"]["message"]
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 401
        assert server.client("s3cret").models.list().data[0].id == "base"
        # The page and the health check stay open: the page asks for the key itself.
        health = httpx.get(server.url + "/health")
        assert health.status_code == 200 and health.json()["api_key_required"] is True
        assert httpx.get(server.url + "/").status_code == 200


# ---------------------------------------------------------------------------------------------
# The queue: limits, time limit, cancellation


def _block_worker(app) -> tuple[threading.Event, threading.Event]:
    """Occupy the engine's worker with a job that waits until released."""
    started, release = threading.Event(), threading.Event()

    def blocker(emit, should_stop):
        started.set()
        release.wait(30)

    loop = asyncio.new_event_loop()  # nobody reads this job's events
    app.state.engine.submit(blocker, loop=loop, timeout=60)
    assert started.wait(10)
    return started, release


def _wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_full_queue_answers_503_with_retry_after(base):
    app = create_app(base, max_queue=1)
    with LiveServer(app) as server:
        _, release = _block_worker(app)
        try:
            body = {"prompt": "Hi", "max_tokens": 2, "temperature": 0}
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, server.url + "/v1/completions", json=body)
                _wait_for(lambda: app.state.engine.queued == 1)
                r = httpx.post(server.url + "/v1/completions", json=body)
                assert r.status_code == 503
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "queue_full"
                with pytest.raises(openai.APIStatusError) as e:
                    server.client().completions.create(model="base", prompt="Hi", max_tokens=2)
                assert e.value.status_code == 503
                release.set()
                assert waiting.result(30).status_code == 200  # the queued one is served
        finally:
            release.set()
        assert httpx.get(server.url + "/health").json()["rejected"] == 2


def test_time_limit(base):
    app = create_app(base, timeout=0.5)
    with LiveServer(app) as server:
        _, release = _block_worker(app)
        try:
            r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
            assert r.status_code == 504
            assert "limit of 0.5 s" in r.json()["error"]["message"]
        finally:
            release.set()
        # The expired job is dropped, not run, once the worker gets to it.
        _wait_for(lambda: app.state.engine.stats["timed_out"] >= 1)
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 200


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_generation(base, stream):
    app = create_app(base)
    with LiveServer(app) as server:
        _, release = _block_worker(app)
        try:
            body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40}
            body["stream"] = stream
            with httpx.Client(timeout=30) as c:
                if stream:
                    with c.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
                        assert r.status_code == 200
                        next(r.iter_lines())  # the role chunk arrived; now hang up
                else:
                    with contextlib.suppress(httpx.TimeoutException):
                        c.post(server.url + "/v1/chat/completions", json=body, timeout=0.5)
            _wait_for(lambda: app.state.engine.queued == 1)
        finally:
            release.set()
        _wait_for(lambda: app.state.engine.stats["cancelled"] == 1)
        assert app.state.engine.stats["completed"] == 1  # the blocker only


def test_cancelled_generation_stops_between_tokens(base):
    pieces = []
    ids = base.tokenizer.encode("Hello")
    out = run_generation(
        base, [ids], n=1, max_tokens=30, sampling=SamplingConfig(), stop=[],
        emit=pieces.append, should_stop=lambda: len(pieces) >= 3,
    )  # fmt: skip
    assert out == [] and len(pieces) == 3


# ---------------------------------------------------------------------------------------------
# Classifier checkpoints, the page, the CLI


def test_classifier_serves_classify(ckpts):
    from scratchgpt.tasks.classify import classify

    served = load_served_model(ckpts["clf"])
    assert served.kind == "classifier"
    texts = ["You won a free prize, call now", "See you at lunch tomorrow"]
    want = classify(served.classifier, texts)
    with LiveServer(create_app(served)) as server:
        r = httpx.post(server.url + "/v1/classify", json={"model": "clf", "input": texts})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert [d["label"] for d in data] == [p.label for p in want]
        for d, p in zip(data, want, strict=True):
            assert d["probability"] == pytest.approx(p.probability, abs=1e-6)
            assert set(d["probabilities"]) == {"ham", "spam"}
        r = httpx.post(server.url + "/v1/classify", json={"input": ""})
        assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "x"})
        assert r.status_code == 404
        assert httpx.get(server.url + "/health").json()["kind"] == "classifier"


def test_chat_page_is_self_contained(live):
    r = httpx.get(live.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/v1/chat/completions" in page and "stream: true" in page
    assert 'id="temperature"' in page and 'id="max-tokens"' in page
    # Works offline: no external scripts, styles, fonts or images.
    for needle in ("http://", "https://", "<script src", "<link", "@import", "url("):
        assert needle not in page


def test_cli_serve_prints_url_and_serves(ckpts, tmp_path):
    env = {**os.environ, "SERVE_TEST_KEY": "k3y"}
    cmd = [sys.executable, "-m", "scratchgpt", "serve", "--checkpoint", str(ckpts["base"])]
    bad = subprocess.run(
        [*cmd, "--api-key-env", "SERVE_TEST_UNSET_VAR"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "SERVE_TEST_UNSET_VAR" in bad.stderr
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--api-key-env", "SERVE_TEST_KEY"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving model 'base' at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0)
        resp = client.completions.create(model="base", prompt="Hi", max_tokens=3, temperature=0)
        assert resp.usage.completion_tokens >= 1
        assert httpx.get(url + "/v1/models").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
