"""What the server does when asked to stop (Ctrl-C, SIGTERM): it refuses new connections at
once and lets a request in flight finish its reply, then exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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


def test_sigterm_stops_accepting_cancels_past_the_deadline_and_exits_0(tmp_path):
    """`scratchgpt serve` on SIGTERM: new connections are refused, a reply still running after
    --shutdown-timeout is cancelled (its stream ends with an error event), the request is
    logged, the exit code is 0."""
    # A 1024-token context: a 1000-token reply is still running when the signal arrives.
    ckpt = make_checkpoints(tmp_path, context=1024)["base"]
    cmd = [sys.executable, "-m", "scratchgpt", "serve", "--checkpoint", str(ckpt)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--shutdown-timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving model 'base' at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        body = {"prompt": "Hi", "max_tokens": 1000, "temperature": 0, "stream": True}
        received = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            received.append(next(line for line in lines if line.startswith("data: {")))
            proc.send_signal(signal.SIGTERM)
            received += [line for line in lines if line.startswith("data: ")]
        assert proc.wait(60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=5)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert received[-1] == "data: [DONE]"  # the stream ends properly either way
    logged = [line for line in err.splitlines() if " request cmpl-" in line]
    assert len(logged) == 1, err
    if "finish=cancelled" in logged[0]:
        assert "shutting down" in json.loads(received[-2][len("data: ") :])["error"]["message"]
    else:  # a fast machine: done within the second
        assert "completion_tokens=1000" in logged[0]
    assert "Traceback" not in err and "ERROR" not in err
