"""The LLM judge client against a real HTTP server on 127.0.0.1, for both endpoint styles."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.evaluation.judge import (
    JudgeClient,
    JudgeError,
    judge_prompt,
    judge_responses,
    parse_score,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class FakeJudge:
    """A chat server on 127.0.0.1: each request takes the next scripted action."""

    def __init__(self, style: str) -> None:
        self.style = style
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                judge.requests.append(
                    {
                        "path": self.path,
                        "body": json.loads(body),
                        "auth": self.headers.get("Authorization"),
                    }
                )
                action = judge.script.pop(0) if judge.script else ("reply", "50")
                kind = action[0]
                if kind == "sleep":
                    time.sleep(action[1])
                    action = ("reply", action[2])
                    kind = "reply"
                if kind == "status":
                    self._send(action[1], json.dumps({"error": "scripted"}).encode())
                    return
                if kind == "missing":
                    payload = {"message": {}} if judge.style == "ollama" else {"choices": []}
                else:
                    text = action[1]
                    payload = (
                        {
                            "model": "m",
                            "message": {"role": "assistant", "content": text},
                            "done": True,
                        }
                        if judge.style == "ollama"
                        else {"choices": [{"message": {"role": "assistant", "content": text}}]}
                    )
                self._send(200, json.dumps(payload).encode())

            def _send(self, code, data):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.server_address[1]
        path = "/api/chat" if style == "ollama" else "/v1/chat/completions"
        self.url = f"http://127.0.0.1:{port}{path}"
        self.base = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["ollama", "openai"])
def judge(request):
    j = FakeJudge(request.param)
    yield j
    j.close()


RECORDS = [
    {"instruction": f"Task {i}", "input": "", "output": f"out {i}", "model_response": f"resp {i}"}
    for i in range(6)
]


def client_for(judge: FakeJudge, **kw) -> JudgeClient:
    sleeps: list[float] = []
    kw.setdefault("sleep", sleeps.append)
    return JudgeClient(judge.url, "judge-model", **kw)


def test_judge_prompt_is_the_books():
    rec = {"instruction": "Name a color.", "input": "", "output": "Blue.", "model_response": "Red."}
    assert judge_prompt(rec) == (
        "Given the input `Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nName a color.` and correct "
        "output `Blue.`, score the model response `Red.` on a scale from 0 to 100, where 100 is "
        "the best score. Respond with the integer number only."
    )


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("85", (85, "ok")),
        (" 85.\n", (85, "ok")),
        ("Score: 92", (92, "ok")),
        ("70/100", (70, "ok")),
        ("I would rate it 40 out of 100.", (40, "ok")),
        ("85\n\nThe response misses 2 details.", (85, "ok")),
        ("77.6", (78, "ok")),
        ("100", (100, "ok")),
        ("0", (0, "ok")),
        ("The response is accurate and well written.", (None, "no_number")),
        ("between 80 and 90", (None, "ambiguous")),
        ("150", (None, "out_of_range")),
        ("-5", (None, "out_of_range")),
        ("", (None, "missing")),
        (None, (None, "missing")),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


def test_numeric_wordy_out_of_range_and_missing_replies(judge):
    judge.script = [
        ("reply", "90"),
        ("reply", "The answer is correct and concise."),
        ("reply", "250"),
        ("missing",),
        ("reply", "Score: 40/100"),
        ("reply", "71"),
    ]
    client = client_for(judge)
    report = judge_responses(RECORDS, client, progress=False)
    assert report["total"] == 6 and report["scored"] == 3 and report["unparseable"] == 3
    assert report["failed"] == 0
    assert report["mean"] == pytest.approx((90 + 40 + 71) / 3)
    assert [it["score"] for it in report["items"]] == [90, None, None, None, 40, 71]
    assert [it["status"] for it in report["items"]][1:4] == ["no_number", "out_of_range", "missing"]
    assert report["distribution"]["90-100"] == 1 and report["distribution"]["70-79"] == 1
    assert sum(report["distribution"].values()) == 3
    # What went over the wire: the book's prompt, temperature 0 and a seed, per endpoint style.
    first = judge.requests[0]
    assert first["path"] == ("/api/chat" if judge.style == "ollama" else "/v1/chat/completions")
    body = first["body"]
    assert body["model"] == "judge-model"
    assert body["messages"] == [{"role": "user", "content": judge_prompt(RECORDS[0])}]
    if judge.style == "ollama":
        assert body["options"]["temperature"] == 0 and body["options"]["seed"] == 123
        assert body["stream"] is False
    else:
        assert body["temperature"] == 0 and body["seed"] == 123


def test_retries_with_backoff_after_server_errors(judge):
    judge.script = [("status", 503), ("status", 500), ("reply", "64")]
    sleeps: list[float] = []
    client = client_for(judge, retries=3, backoff=0.5, sleep=sleeps.append)
    assert client.ask("q") == "64"
    assert len(judge.requests) == 3 and sleeps == [0.5, 1.0]


def test_timeout_is_retried_then_succeeds(judge):
    judge.script = [("sleep", 1.0, "12"), ("reply", "33")]
    client = client_for(judge, timeout=0.2, retries=1)
    assert client.ask("q") == "33"


def test_slow_judge_fails_with_a_clear_error(judge):
    judge.script = [("sleep", 0.6, "1"), ("sleep", 0.6, "1")]
    client = client_for(judge, timeout=0.15, retries=1)
    with pytest.raises(JudgeError, match=r"failed after 2 attempt\(s\): no answer within 0.15 s"):
        judge_responses(RECORDS[:1], client, progress=False)


def test_client_errors_are_not_retried(judge):
    judge.script = [("status", 404)]
    with pytest.raises(JudgeError, match="refused the request \\(HTTP 404"):
        client_for(judge, retries=3).ask("q")
    assert len(judge.requests) == 1


def test_later_failures_are_counted_not_fatal(judge):
    judge.script = [("reply", "80"), ("status", 503), ("status", 503), ("reply", "60")]
    client = client_for(judge, retries=1)
    report = judge_responses(RECORDS[:3], client, progress=False)
    assert report["failed"] == 1 and report["scored"] == 2 and report["mean"] == 70
    assert report["items"][1]["status"] == "failed"


def test_unreachable_judge():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    client = JudgeClient(f"http://127.0.0.1:{port}", "m", retries=1, sleep=lambda s: None)
    assert client.endpoint.endswith("/api/chat")  # a bare URL gets Ollama's path
    with pytest.raises(JudgeError, match="cannot connect"):
        judge_responses(RECORDS[:2], client, progress=False)


def test_cli_report_api_key_and_overwrite(judge, tmp_path, monkeypatch, capsys):
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(RECORDS[:3]), encoding="utf-8")
    judge.script = [("reply", "10"), ("reply", "no idea"), ("reply", "30")]
    monkeypatch.setenv("MY_JUDGE_KEY", "sekrit")
    out = tmp_path / "report.json"
    args = [
        "evaluate", "judge", "--responses", str(responses), "--judge-url", judge.base
        + ("/v1" if judge.style == "openai" else ""), "--judge-model", "j", "--api-key-env",
        "MY_JUDGE_KEY", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "Number of scores: 2 of 3" in printed.out and "Average score: 20.00" in printed.out
    report = json.loads(out.read_text("utf-8"))
    assert report["scored"] == 2 and report["unparseable"] == 1 and report["mean"] == 20
    assert report["judge"]["api"] == judge.style
    assert [it["score"] for it in report["items"]] == [10, None, 30]
    assert judge.requests[0]["auth"] == "Bearer sekrit"
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_cli_bad_responses_file(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"instruction": "x", "output": "y"}]), encoding="utf-8")
    args = ["evaluate", "judge", "--responses", str(bad), "--judge-url", "http://127.0.0.1:9",
            "--judge-model", "m"]  # fmt: skip
    assert main(args) == 2
    assert "record 0: field 'model_response' missing" in capsys.readouterr().err
