"""`respond` keeps its finished responses when interrupted and `--resume` continues them: the
result equals an uninterrupted run (greedy decoding over the same batches)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scratchgpt.generation as generation
from scratchgpt.cli import main
from scratchgpt.config import GPTConfig
from scratchgpt.data.instructions import load_instruction_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from scratchgpt.model import GPTModel
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    torch.manual_seed(0)
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=64))
    path = tmp_path_factory.mktemp("base") / "ckpt"
    save_checkpoint(path, model, get_tokenizer("gpt2"))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "records.json"
    path.write_text(json.dumps(load_instruction_records()[:40]), encoding="utf-8")
    return path


def respond_args(ckpt, data, out, *extra, limit=10):
    return ["respond", "--checkpoint", str(ckpt), "--data", str(data), "--limit", str(limit),
            "--batch-size", "2", "--max-new-tokens", "6", "--threads", "1", "--out", str(out),
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(ckpt, data, tmp_path_factory):
    """The uninterrupted run's output file, for 10 and for 40 records."""
    folder = tmp_path_factory.mktemp("ref")
    out = {}
    for limit in (10, 40):
        out[limit] = folder / f"full{limit}.json"
        assert main(respond_args(ckpt, data, out[limit], limit=limit)) == 0
    return out


def interrupt_after(monkeypatch, batches: int) -> None:
    """Ctrl-C during the generation of batch ``batches + 1``."""
    real = generation.generate_text
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) > batches:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_text", fake)


def test_interrupt_keeps_finished_responses_and_resume_completes(
    ckpt, data, reference, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial"
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert main(respond_args(ckpt, data, out)) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 4 of 10 responses saved in {partial}" in err
    assert "--resume" in err
    assert not out.exists()
    full = json.loads(reference[10].read_text("utf-8"))
    assert json.loads(partial.read_text("utf-8")) == full[:4]

    # A rerun without --resume does not silently drop them.
    assert main(respond_args(ckpt, data, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and err.count("\n") == 1

    # Interrupted again while resuming: the new batch is kept too.
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        assert main(respond_args(ckpt, data, out, "--resume")) == 130
    assert "6 of 10 responses saved" in capsys.readouterr().err
    assert main(respond_args(ckpt, data, out, "--resume")) == 0
    assert "resuming: 6 of 10 responses already done" in capsys.readouterr().err
    assert out.read_bytes() == reference[10].read_bytes()
    assert not partial.exists()


def test_resume_checks_the_records(ckpt, data, reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert main(respond_args(ckpt, data, out)) == 130
    capsys.readouterr()
    other = [*respond_args(ckpt, data, out, "--resume"), "--split", "test"]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "does not answer record 0" in err and err.count("\n") == 1
    # --overwrite starts over (and drops the stale partial file).
    assert main(respond_args(ckpt, data, out, "--overwrite")) == 0
    assert out.read_bytes() == reference[10].read_bytes()
    assert not (tmp_path / "r.json.partial").exists()


def test_resume_needs_out(ckpt, data, capsys):
    args = ["respond", "--checkpoint", str(ckpt), "--data", str(data), "--resume"]
    assert main(args) == 2
    assert "--resume needs --out FILE" in capsys.readouterr().err


def test_sigterm_in_a_real_process_then_resume(ckpt, data, reference, tmp_path, capsys):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SCRATCHGPT_PROGRESS_INTERVAL": "0"}
    cmd = [sys.executable, "-m", "scratchgpt", *respond_args(ckpt, data, out, limit=40)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # synchronised on the progress output: no sleeps
            seen.append(line)
            if line.startswith("responses: 4/40"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, "".join(seen) + rest
    assert "run the same command with --resume" in rest
    done = json.loads((tmp_path / "r.json.partial").read_text("utf-8"))
    assert 4 <= len(done) < 40 and len(done) % 2 == 0
    assert main(respond_args(ckpt, data, out, "--resume", limit=40)) == 0
    assert out.read_bytes() == reference[40].read_bytes()
