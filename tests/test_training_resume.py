"""Exact resume of a real `python -m scratchgpt pretrain` process killed with SIGKILL or stopped
with Ctrl-C (SIGINT): the resumed run logs exactly the losses of a run never interrupted."""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scratchgpt.training.logging import read_metrics

pytestmark = pytest.mark.slow

TEXT = (
    "It had always been his fate to have women say such things of him: the fact should be set "
    "down in extenuation. What struck me now was that, for the first time, he resented the tone. "
    "I had seen him, so often, basking under similar tributes--was it the conjugal note that "
    "robbed them of their savour? No--for, oddly enough, it became apparent that he was fond of "
    "Mrs. Gisburn--fond enough not to see her absurdity. It was his own absurdity he seemed to be "
    "wincing under--his own attitude as an object for garlands and incense. "
) * 3

# Dropout, shuffling across several epochs, gradient accumulation, warm-up + cosine decay and
# clipping: every piece of state a resume has to restore.
ARGS = shlex.split(
    "--model tiny --context-length 16 --emb-dim 16 --n-heads 2 --n-layers 1 --drop-rate 0.2 "
    "--tokenizer char --max-length 16 --stride 8 --batch-size 4 --grad-accum-steps 2 "
    "--max-steps 120 --schedule cosine --warmup-steps 10 --lr 3e-3 --min-lr 1e-4 --grad-clip "
    "1.0 --eval-interval 10 --eval-batches 2 --sample-tokens 0 --checkpoint-interval 5 "
    "--keep-last 2 --precision fp32 --seed 11 --no-progress --no-plot --peak-tflops 1"
)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(text: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "scratchgpt",
        "pretrain",
        "--data",
        str(text),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 60.0) -> None:
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    while not latest.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.005)


def _losses(run: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(run / "metrics.jsonl") if key in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    baseline = _start(text, root / "baseline")
    killed = _start(text, root / "killed")
    stopped = _start(text, root / "stopped")

    _wait_for_checkpoint(killed, root / "killed")
    time.sleep(random.uniform(0.0, 0.2))  # a random moment after the first checkpoint
    killed.send_signal(signal.SIGKILL)
    killed.communicate()

    _wait_for_checkpoint(stopped, root / "stopped")
    stopped.send_signal(signal.SIGINT)
    s_out, s_err = stopped.communicate(timeout=60)

    _, b_err = baseline.communicate(timeout=120)
    assert baseline.returncode == 0, b_err
    return {
        "root": root,
        "text": text,
        "killed_rc": killed.returncode,
        "stopped": (stopped.returncode, s_out, s_err),
    }


def _resume(runs, name: str) -> subprocess.CompletedProcess:
    out = runs["root"] / name
    proc = _start(runs["text"], out, "--resume")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigkill_then_resume_logs_the_same_losses(runs):
    root = runs["root"]
    assert runs["killed_rc"] == -signal.SIGKILL, "the run finished before it could be killed"
    before = _losses(root / "killed", "train_loss")
    assert 0 < max(before) < 120
    done = _resume(runs, "killed")
    assert "resuming from step-" in done.stdout
    baseline = _losses(root / "baseline", "train_loss")
    assert len(baseline) == 120
    assert _losses(root / "killed", "train_loss") == baseline
    assert _losses(root / "killed", "val_loss") == _losses(root / "baseline", "val_loss")
    assert _losses(root / "killed", "lr") == _losses(root / "baseline", "lr")


def test_ctrl_c_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(runs):
    root = runs["root"]
    rc, _, stderr = runs["stopped"]
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted at step" in stderr and "--resume" in stderr
    step = int(stderr.split("interrupted at step ")[1].split(";")[0])
    latest = (root / "stopped" / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{step:06d}"  # saved at the step it stopped, not the last interval
    _resume(runs, "stopped")
    assert _losses(root / "stopped", "train_loss") == _losses(root / "baseline", "train_loss")
