"""What the server does when asked to stop (Ctrl-C, SIGTERM): it refuses new connections at
once and lets a request in flight finish its reply, then exits."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("fastapi")
from scratchgpt.serving import create_app, load_served_model
from test_serving import LiveServer, _wait_for, httpx, make_checkpoints


def _stream_through_shutdown(live: LiveServer, gate: threading.Event) -> list[str]:
    """Start a streamed reply, ask the server to stop, check that it refuses new connections,
    then let the generation go on; returns the reply's events."""
    body = {"prompt": "Hello", "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        events = [next(line for line in lines if line.startswith("data: "))]
        live.server.should_exit = True  # what uvicorn does on SIGINT or SIGTERM
        pause = threading.Event()  # never set: a wait that cannot be cut short
        for _ in range(300):
            try:
                httpx.get(live.url + "/health", timeout=5)
            except httpx.TransportError:
                break
            pause.wait(0.1)
        else:
            raise AssertionError("the server still accepts connections")
        gate.set()
        return events + [line for line in lines if line.startswith("data: ")]


def test_a_reply_in_flight_finishes_after_shutdown_starts(tmp_path):
    served = load_served_model(make_checkpoints(tmp_path)["base"])
    gate, calls = threading.Event(), []

    def hook(*_):  # generation halts after its third forward pass until the gate opens
        calls.append(1)
        if len(calls) >= 3:
            gate.wait(30)

    app = create_app(served)
    live = LiveServer(app)
    try:
        with live:
            _wait_for(lambda: app.state.engine.ready)  # the warm-up's forward passes are done
            served.model.register_forward_hook(hook)
            events = _stream_through_shutdown(live, gate)
    finally:
        gate.set()
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert not live.thread.is_alive()
