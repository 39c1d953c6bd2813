"""Exclusive locks on run folders and outputs, with real processes: a second process gets a
one-line error naming the holder, ``--overwrite`` never deletes a live run, a dead holder's lock
file blocks nobody, and a failed start leaves a folder the same command can run in again."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from scratchgpt.cli import main
from scratchgpt.training.logging import read_metrics

# A tiny character-level run: a few seconds even on a busy machine.
ARGS = shlex.split(
    "--model tiny --context-length 16 --emb-dim 16 --n-heads 2 --n-layers 1 --tokenizer char "
    "--max-length 16 --stride 8 --batch-size 2 --eval-interval 0 --sample-tokens 0 "
    "--checkpoint-interval 1 --precision fp32 --no-progress --no-plot --peak-tflops 1"
)
TEXT = "It had always been his fate to have women say such things of him. " * 20

# A real `scratchgpt` process that stops right after its first checkpoint until the test writes
# a line to (or closes) its standard input: the test acts while the run is known to be live.
HELD_RUN = textwrap.dedent(
    """
    import sys
    from scratchgpt.training.engine import Engine

    save = Engine.save

    def held(self, *args, **kwargs):
        path = save(self, *args, **kwargs)
        print("saved", path.name, flush=True)
        sys.stdin.readline()
        return path

    Engine.save = held
    from scratchgpt.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)

# A process that holds the output locks of the paths it is given until its stdin closes.
HOLD_OUTPUTS = textwrap.dedent(
    """
    import contextlib, sys
    from scratchgpt.locking import hold_output

    with contextlib.ExitStack() as stack:
        for path in sys.argv[1:]:
            stack.enter_context(hold_output(path))
        print("held", flush=True)
        sys.stdin.readline()
    """
)

BUSY = r"is in use by process {pid} \(.*{what}.*, started [0-9:\- ]+\); wait for it to finish or stop it first"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(tmp_path: Path, script: str, *args: str) -> subprocess.Popen:
    path = tmp_path / "child.py"
    path.write_text(script)
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, word: str) -> str:
    """The child's first stdout line that starts with ``word`` (EOF first: it failed)."""
    seen = []
    for line in proc.stdout:
        if line.startswith(word):
            return line
        seen.append(line)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"the child process did not get to {word!r}: {''.join(seen)}{out}\n{err}")


def _release(proc: subprocess.Popen) -> tuple[int, str]:
    # communicate() closes the child's stdin: every later readline() there returns at once.
    _out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _busy_error(capsys, path: Path, pid: int, what: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(re.escape(str(path)) + " " + BUSY.format(pid=pid, what=what), err), err
    return err


def _pretrain(run: Path, *extra: str) -> int:
    return main(
        ["pretrain", "--data", str(run.parent / "text.txt"), "--out", str(run), *ARGS, *extra]
    )


@pytest.fixture
def text(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path / "text.txt"


def test_a_live_run_is_neither_overwritten_nor_resumed_twice(tmp_path, text, capsys):
    run = tmp_path / "run"
    assert _pretrain(run, "--max-steps", "1") == 0
    live = _spawn(
        tmp_path, HELD_RUN, "pretrain", "--data", str(text), "--out", str(run), "--resume",
        *ARGS, "--max-steps", "3",
    )  # fmt: skip
    try:
        assert _wait_for(live, "saved").split() == ["saved", "step-000002"]
        capsys.readouterr()
        before = sorted(p.name for p in (run / "checkpoints").iterdir())

        assert _pretrain(run, "--overwrite", "--max-steps", "1") == 2
        _busy_error(capsys, run, live.pid, "pretrain")
        assert _pretrain(run, "--resume", "--max-steps", "3") == 2
        _busy_error(capsys, run, live.pid, "pretrain")
        assert _pretrain(run, "--max-steps", "1") == 2
        _busy_error(capsys, run, live.pid, "pretrain")
        # Nothing of the live run was touched.
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
        assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    finally:
        rc, err = _release(live)
    assert rc == 0, err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000003"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3]
    # Released: the next command gets the folder.
    assert _pretrain(run, "--resume", "--max-steps", "4") == 0


def test_a_killed_holder_leaves_a_lock_file_that_blocks_nobody(tmp_path, text, capsys):
    run = tmp_path / "run"
    live = _spawn(
        tmp_path, HELD_RUN, "pretrain", "--data", str(text), "--out", str(run), *ARGS,
        "--max-steps", "3",
    )  # fmt: skip
    _wait_for(live, "saved")
    live.send_signal(signal.SIGKILL)
    live.communicate(timeout=60)
    lock_file = run / ".scratchgpt.lock"
    assert f'"pid": {live.pid}' in lock_file.read_text()  # the dead holder's record is there
    assert _pretrain(run, "--resume", "--max-steps", "2") == 0
    assert "resuming from step-000001" in capsys.readouterr().out
    assert _pretrain(run, "--overwrite", "--max-steps", "1") == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failed_start_leaves_a_folder_the_same_command_reruns_in(tmp_path, text, capsys):
    run = tmp_path / "run"
    assert _pretrain(run, "--max-steps", "1", "--device", "cuda") == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert _pretrain(run, "--max-steps", "1", "--device", "cpu") == 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000001"
    # A run that did write a checkpoint still needs --resume or --overwrite.
    assert _pretrain(run, "--max-steps", "1") == 2
    assert "--resume" in capsys.readouterr().err


def test_outputs_of_other_commands_are_locked_while_written(tmp_path, text, capsys):
    outs = {
        "respond": tmp_path / "responses.json",
        "prepare": tmp_path / "shards",
        "train-tokenizer": tmp_path / "bpe.json",
        "evaluate": tmp_path / "loss.json",
    }
    holder = _spawn(tmp_path, HOLD_OUTPUTS, *map(str, outs.values()))
    commands = {
        "respond": ["respond", "--checkpoint", str(tmp_path), "--out", str(outs["respond"])],
        "prepare": ["prepare", str(text), "--out", str(outs["prepare"]), "--tokenizer", "gpt2"],
        "train-tokenizer": [
            "train-tokenizer", str(text), "--vocab-size", "260", "--out",
            str(outs["train-tokenizer"]),
        ],
        "evaluate": [
            "evaluate", "loss", "--checkpoint", str(tmp_path), "--data", str(text), "--out",
            str(outs["evaluate"]),
        ],
    }  # fmt: skip
    try:
        _wait_for(holder, "held")
        for name, argv in commands.items():
            assert main(argv) == 2, name
            _busy_error(capsys, outs[name], holder.pid, "child.py")
            assert not outs[name].exists(), name
    finally:
        rc, err = _release(holder)
    assert rc == 0, err
    # Released: the lock files beside the outputs are gone, and the outputs can be written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "text.txt"]
    assert main(commands["train-tokenizer"] + ["--no-progress"]) == 0
    assert outs["train-tokenizer"].is_file()


def test_lock_files_record_the_holder_and_are_cleaned_up(tmp_path, monkeypatch):
    from scratchgpt.locking import InUseError, command_line, hold_output, output_lock_file
    from scratchgpt.training.run_dir import LOCK_FILE, hold_run_dir

    monkeypatch.setattr(sys, "argv", ["/x/src/scratchgpt/__main__.py", "respond", "--out", "a b"])
    assert command_line() == "scratchgpt respond --out 'a b'"
    out = tmp_path / "out.json"
    with hold_output(out):
        assert f'"pid": {os.getpid()}' in output_lock_file(out).read_text()
        # flock locks belong to an open file: a second taker in this process is refused too.
        busy = rf"out.json is in use by process {os.getpid()} "
        with pytest.raises(InUseError, match=busy), hold_output(out):
            pass
    assert not output_lock_file(out).exists()  # an output's lock file goes when released
    with hold_run_dir(tmp_path / "run") as run:
        assert (run / LOCK_FILE).read_text()
    assert (run / LOCK_FILE).read_text() == ""  # a run folder's stays, emptied, as its marker
