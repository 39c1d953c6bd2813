"""The server under concurrent load: continuous batching keeps every answer equal to the answer
the request gets alone; readiness, /metrics, the request log, and the engine's shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
from prometheus_client.parser import text_string_to_metric_families

from scratchgpt.generation.slots import SlotRequest
from scratchgpt.serving import create_app, load_served_model, routes
from scratchgpt.serving.engine import Engine, JobCancelledError, QueueFullError
from test_serving import LiveServer, _wait_for, httpx, make_checkpoints


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return load_served_model(make_checkpoints(tmp_path_factory.mktemp("batching"))["base"])


def metric_values(url: str) -> dict[str, float]:
    """Every sample of /metrics by name and labels, e.g. 'scratchgpt_requests_total{completed}'."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(v for k, v in sorted(s.labels.items()) if k != "le")
            key = s.name + (f"{{{labels}}}" if labels else "")
            if "le" not in s.labels:
                out[key] = s.value
    return out


# ---------------------------------------------------------------------------------------------
# The load test


def good_requests() -> list[dict]:
    """Completions and chats, greedy and seeded, streamed or not, of different lengths."""
    prompts = ["Every effort moves you", "Hi", "The quick brown fox jumps over", "A"]
    out = []
    for i in range(16):
        body = {"max_tokens": 4 + (i * 5) % 17, "temperature": 0.0 if i % 2 else 0.8, "seed": i}
        if i % 4 == 3:
            body["messages"] = [{"role": "user", "content": prompts[i % 4]}]
        else:
            body["prompt"] = prompts[i % 4] + " " * (i % 3)
        body["stream"] = i % 3 == 0
        out.append(body)
    return out


BAD = [
    ("/v1/completions", {"prompt": "", "max_tokens": 2}, 400),
    ("/v1/completions", {"prompt": "x", "temperature": 5}, 400),
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 500}, 400),
    ("/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404),
    ("/v1/chat/completions", {"messages": []}, 400),
    ("/v1/completions", {"prompt": 3}, 400),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "Hi"}]}, 400),
]


def ask(url: str, body: dict) -> tuple[int, str]:
    """(status, text) of one good request, streamed or not."""
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    if not body["stream"]:
        r = httpx.post(url + path, json=body, timeout=120)
        if r.status_code != 200:
            return r.status_code, r.text
        c = r.json()["choices"][0]
        return 200, c["message"]["content"] if "message" in c else c["text"]
    text = []
    with httpx.stream("POST", url + path, json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return 500, line
            for c in chunk["choices"]:
                text.append(c.get("text") or c.get("delta", {}).get("content") or "")
        return r.status_code, "".join(text)


def hang_up(url: str, i: int) -> int:
    """Start a long streamed completion, read its first chunk, and disconnect."""
    body = {"prompt": "Once", "max_tokens": 60, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        status = r.status_code
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break
    return status


def test_load_32_requests_from_8_threads(base):
    """Good requests (equal to their answer alone), clients that hang up mid-stream, bad
    requests (4xx): no 5xx, the server still answers, every slot is free afterwards."""
    app = create_app(base, max_queue=64)
    engine = app.state.engine
    with LiveServer(app) as live:
        _wait_for(lambda: engine.ready)
        goods = good_requests()
        alone = [ask(live.url, body) for body in goods]  # one at a time: nothing beside them
        assert all(status == 200 for status, _ in alone)
        completed_alone = engine.stats["completed"]

        work = [("good", i) for i in range(16)] + [("bad", i) for i in range(8)]
        work += [("hang", i) for i in range(8)]
        work = work[::3] + work[1::3] + work[2::3]  # mixed kinds, starting at different times

        def run(item):
            kind, i = item
            if kind == "good":
                return kind, i, ask(live.url, goods[i])
            if kind == "bad":
                path, body, _ = BAD[i]
                r = httpx.post(live.url + path, json=body, timeout=60)
                return kind, i, (r.status_code, r.text)
            return kind, i, (hang_up(live.url, i), "")

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, work))
        for kind, i, (status, text) in results:
            assert status < 500, (kind, i, status, text)
            if kind == "good":
                assert (status, text) == alone[i], (i, goods[i])
            elif kind == "bad":
                assert status == BAD[i][2], (BAD[i], status, text)
        # Every slot comes back (hung-up streams end as cancelled or, if done first, completed).
        _wait_for(lambda: engine.active_slots == 0 and engine.queued == 0, timeout=60)
        stats = engine.stats
        assert stats["completed"] - completed_alone + stats["cancelled"] == 16 + 8
        assert stats["failed"] == stats["timed_out"] == stats["rejected"] == 0
        assert ask(live.url, goods[0]) == alone[0]  # still answers, the same
        assert httpx.get(live.url + "/health").json()["active_slots"] == 0
        assert metric_values(live.url)["scratchgpt_active_slots"] == 0


# ---------------------------------------------------------------------------------------------
# Readiness, metrics, the request log


def test_health_is_ready_only_after_warm_up(base):
    app = create_app(base)
    engine = app.state.engine
    assert not engine.ready  # a model to warm up, and the worker has not started
    early = asyncio.run(routes.health(served=base, engine=engine))
    assert early.status_code == 503 and b'"status":"loading"' in early.body
    with LiveServer(app) as live:
        _wait_for(lambda: engine.ready)
        health = httpx.get(live.url + "/health")
        assert health.status_code == 200
        state = health.json()
        assert state["status"] == "ok" and state["ready"] is True
        assert state["slots"] == 8 and state["active_slots"] == 0


def test_metrics_and_one_log_line_per_request(base, caplog):
    app = create_app(base, slots=4)
    with LiveServer(app) as live, caplog.at_level(logging.INFO, logger="scratchgpt.serving"):
        _wait_for(lambda: app.state.engine.ready)
        before = metric_values(live.url)
        assert before["scratchgpt_requests_total{completed}"] == 0
        assert before["scratchgpt_slots"] == 4 and before["scratchgpt_queue_length"] == 0
        bodies = [{"prompt": p, "max_tokens": 5, "temperature": 0} for p in ("Hi", "A", "B C")]
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda b: httpx.post(live.url + "/v1/completions", json=b,
                                                         timeout=60).json(), bodies))  # fmt: skip
        r = httpx.post(live.url + "/v1/completions", json={"prompt": "", "max_tokens": 2})
        assert r.status_code == 400
        after = metric_values(live.url)
        tokens = sum(rep["usage"]["completion_tokens"] for rep in replies)
        assert after["scratchgpt_requests_total{completed}"] == 3
        assert after["scratchgpt_generated_tokens_total"] == tokens
        assert after["scratchgpt_time_to_first_token_seconds_count"] == 3
        assert after["scratchgpt_inter_token_latency_seconds_count"] >= tokens - 3
        assert after["scratchgpt_active_slots"] == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "scratchgpt.serving"]
        ids = {rep["id"] for rep in replies}
        logged = [line for line in lines if line.startswith("request cmpl-")]
        assert len(logged) == 3 and {line.split()[1] for line in logged} == ids
        for line in logged:
            assert "completion_tokens=5" in line and "finish=length" in line
            assert "ttft=" in line and "total=" in line and "prompt_tokens=" in line


# ---------------------------------------------------------------------------------------------
# Shutdown of the engine


def test_engine_stop_cancels_what_runs_past_the_grace_period(base):
    engine = Engine(slots=2)
    engine.load(base.model, base.tokenizer)
    engine.start()
    _wait_for(lambda: engine.ready)
    slow = threading.Event()  # never set: each forward pass waits a little

    def pause(*_) -> None:
        slow.wait(0.05)

    hook = base.model.register_forward_hook(pause)
    loop = asyncio.new_event_loop()
    try:
        job = engine.submit_generation(
            base.model, base.tokenizer, [SlotRequest([1, 2, 3], 60)], loop=loop
        )
        _wait_for(lambda: engine.active_slots == 1)
        engine.stop(grace=0.2)  # 60 tokens take 3 s here: it must be cancelled

        async def drain():
            return [event async for event in job.events()]

        events = loop.run_until_complete(drain())
    finally:
        hook.remove()
        loop.close()
    kind, error = events[-1]
    assert kind == "error" and isinstance(error, JobCancelledError)
    assert "shutting down" in str(error)
    assert engine.active_slots == 0 and engine.stats["cancelled"] == 1
    assert not engine.running


def test_engine_runs_each_family_in_batches(tmp_path):
    """A llama3 checkpoint served with int8 weights and a qwen3 one with bf16 weights: seeded
    answers of concurrent requests equal their answers alone."""
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import build_model
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    tok = get_tokenizer("gpt2")
    for preset in ("llama3-tiny", "qwen3-tiny"):
        torch.manual_seed(0)
        cfg = GPTConfig.from_preset(preset, vocab_size=50257, context_length=64)
        save_checkpoint(tmp_path / preset, build_model(cfg), tok)
        llama = preset.startswith("llama")
        served = load_served_model(
            tmp_path / preset,
            quantize="int8" if llama else None,
            dtype=None if llama else torch.bfloat16,
        )
        assert next(served.model.parameters()).dtype == (torch.float32 if llama else torch.bfloat16)
        app = create_app(served)
        with LiveServer(app) as live:
            bodies = [
                {"prompt": p, "max_tokens": 6 + i, "temperature": 0.7, "seed": i, "stream": i % 2}
                for i, p in enumerate(["Hi", "One two", "The cat sat", "Q"])
            ]
            alone = [ask(live.url, b) for b in bodies]
            with ThreadPoolExecutor(4) as pool:
                assert list(pool.map(lambda b: ask(live.url, b), bodies)) == alone


def test_engine_refuses_new_requests_once_shutting_down(base):
    engine = Engine(slots=1)
    engine.start()
    engine.shutdown(grace=5)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(QueueFullError, match="shutting down"):
            engine.submit_generation(base.model, base.tokenizer, [SlotRequest([1], 2)], loop=loop)
        assert engine.stats["rejected"] == 1
        engine.stop()  # stopped: a new start serves again
        job = engine.submit_generation(base.model, base.tokenizer, [SlotRequest([1], 2)], loop=loop)

        async def result():
            return [event async for event in job.events()][-1]

        kind, choices = loop.run_until_complete(result())
    finally:
        engine.stop()
        loop.close()
    assert kind == "done" and choices[0].completion_tokens == 2
