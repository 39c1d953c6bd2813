"""Multi-process training under torchrun on this CPU (gloo): DDP and FSDP2 give the losses of one
process with the same global batch, checkpoints move between world sizes, a killed rank ends the
job with a clear error and an intact checkpoint. Every process test really launches
`python -m torch.distributed.run --nproc_per_node=2 -m scratchgpt pretrain`."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scratchgpt.cli import main as cli_main
from scratchgpt.errors import ConfigError
from scratchgpt.training import distributed as dd
from scratchgpt.training.config import TrainConfig
from scratchgpt.training.sampler import EpochBatchSampler

torch.set_num_threads(1)

TEXT = (
    "It had always been his fate to have women say such things of him: the fact should be set "
    "down in extenuation. What struck me now was that, for the first time, he resented the tone. "
) * 6

# Two layers (FSDP shards each block separately), no dropout (ranks draw different masks), fp32.
ARGS = shlex.split(
    "--model tiny --context-length 16 --emb-dim 16 --n-heads 2 --n-layers 2 --drop-rate 0.0 "
    "--tokenizer char --max-length 16 --stride 8 --batch-size 2 --lr 3e-3 --grad-clip 1.0 "
    "--eval-interval 2 --eval-batches 2 --sample-tokens 3 --sample-prompt It "
    "--checkpoint-interval 3 --precision fp32 --seed 11 --no-progress --no-plot "
    "--peak-tflops 1 --device cpu"
)
GLOBAL_ACCUM = 4  # one process: 4 micro-batches per step = 2 ranks x 2 micro-batches


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun_cmd(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "scratchgpt",
        "pretrain",
        *args,
    ]


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        _torchrun_cmd(*args, nproc=nproc),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(got: list[dict], ref: list[dict], tol: float) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    for a, b in zip(got, ref, strict=True):
        for key in ("train_loss", "val_loss", "eval_train_loss", "grad_norm"):
            assert (key in a) == (key in b), (a, b)
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=tol), (key, a["step"], a[key], b[key])
        assert a["tokens_seen"] == b["tokens_seen"]
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("dist-data") / "text.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, text_file) -> Path:
    """One process, global batch 2 x 4 = 8 windows, six steps."""
    out = tmp_path_factory.mktemp("dist-ref") / "run"
    argv = ["pretrain", "--data", str(text_file), "--out", str(out), *ARGS, "--max-steps", "6"]
    assert cli_main([*argv, "--grad-accum-steps", str(GLOBAL_ACCUM)]) == 0
    return out


@pytest.fixture(scope="module")
def reference(reference_dir) -> list[dict]:
    return _records(reference_dir)


# ---- without processes


def test_ranks_read_disjoint_parts_that_make_up_the_single_process_order():
    kw = dict(batch_size=3, shuffle=True, drop_last=True, seed=5, epoch=2)
    single = list(EpochBatchSampler(40, **kw))
    for start in (0, 6):  # a resume starts at a whole step: a multiple of the world size
        parts = [
            list(EpochBatchSampler(40, **kw, start=start, rank=r, world_size=3)) for r in range(3)
        ]
        for r, part in enumerate(parts):
            assert part == single[start + r :: 3]
            assert len(EpochBatchSampler(40, **kw, start=start, rank=r, world_size=3)) == len(part)
        seen = [i for part in parts for batch in part for i in batch]
        assert len(seen) == len(set(seen))  # no window twice in an epoch
        assert sorted(seen) == sorted(i for b in single[start:] for i in b)


def test_context_from_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dd.context_from_env() == dd.DistContext(0, 1, 0)
    assert not dd.init_distributed().enabled  # no torchrun: nothing to join
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    ctx = dd.context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (
        2, 4, 0, True, False
    )  # fmt: skip
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4 does not fit WORLD_SIZE=4"):
        dd.context_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x' is not an integer"):
        dd.context_from_env()


def test_a_rank_exits_without_tearing_the_runtime_down_under_gloo(monkeypatch):
    """A torchrun rank that succeeded runs the exit handlers (leaving the process group) and then
    ends with os._exit: gloo's threads outlive destroy_process_group, and the interpreter's
    teardown under them made a finished rank abort ("terminate called without an active
    exception"). A failing rank exits normally."""
    import torch.distributed as dist

    calls: list[object] = []

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        calls.append(("os._exit", code))
        raise Exited

    monkeypatch.setattr(dd.os, "_exit", fake_exit)
    # pytest's own exit handlers must not run here: only record the call.
    monkeypatch.setattr(
        dd.atexit, "_run_exitfuncs", lambda: calls.append("atexit") or dd._destroy()
    )
    with pytest.raises(SystemExit) as info:  # no process group: an ordinary exit
        dd.exit_process(0)
    assert info.value.code == 0 and calls == []
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit) as info:  # a failing rank: an ordinary exit too
            dd.exit_process(2)
        assert info.value.code == 2 and calls == []
        with pytest.raises(Exited):
            dd.exit_process(0)
        assert calls == ["atexit", ("os._exit", 0)]
        assert not dist.is_initialized()  # the exit handlers left the group before os._exit
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_strategy_is_validated():
    assert TrainConfig().strategy == "ddp"
    assert TrainConfig(strategy="fsdp").strategy == "fsdp"
    with pytest.raises(ConfigError, match="strategy"):
        TrainConfig(strategy="zero3")


# ---- real processes


@pytest.mark.slow
def test_ddp_equals_one_process_and_resumes_in_one_process(tmp_path, text_file, reference):
    run = tmp_path / "ddp"
    common = ["--data", str(text_file), "--out", str(run), *ARGS]
    proc = _torchrun(*common, "--max-steps", "3", "--grad-accum-steps", "2")
    got = _records(run)
    _assert_same_run(got, reference[: len(got)], 1e-5)
    assert got[-1]["step"] == 3
    # Only rank 0 speaks and writes: one evaluation line per evaluation, one run.json entry.
    assert proc.stdout.count("Ep 1 (Step 000002)") == 1
    info = json.loads((run / "run.json").read_text())
    assert json.dumps(info).count('"world_size": 2') == 1
    assert "global_batch" in json.dumps(info)
    state = torch.load(run / "checkpoints/step-000003/training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # The same global batch in one process continues the same loss sequence.
    argv = ["pretrain", "--out", str(run), "--resume", "--max-steps", "6"]
    assert cli_main([*argv, "--grad-accum-steps", str(GLOBAL_ACCUM)]) == 0
    _assert_same_run(_records(run), reference, 1e-5)


@pytest.mark.slow
def test_fsdp_equals_one_process_resumes_and_loads_in_one_process(
    tmp_path, text_file, reference, reference_dir
):
    from scratchgpt.generation import generate_text
    from scratchgpt.weights import load_checkpoint

    run = tmp_path / "fsdp"
    common = ["--data", str(text_file), "--out", str(run), *ARGS, "--strategy", "fsdp"]
    _torchrun(*common, "--max-steps", "3", "--grad-accum-steps", "2")
    _assert_same_run(_records(run), reference[:4], 1e-4)
    # Resume under FSDP from the full (unsharded) checkpoint: optimizer state is re-sharded.
    _torchrun("--out", str(run), "--resume", "--max-steps", "6", "--strategy", "fsdp")
    _assert_same_run(_records(run), reference, 1e-4)
    # The checkpoint is an ordinary model folder: one process loads it and generates.
    loaded = load_checkpoint(run / "checkpoints/step-000006")
    assert loaded.model.cfg.n_layers == 2
    assert all(not hasattr(p, "full_tensor") for p in loaded.model.parameters())
    ref = load_checkpoint(reference_dir / "checkpoints/step-000006")
    ref_weights = ref.model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.allclose(tensor, ref_weights[name], atol=1e-4), name
    assert len(generate_text(loaded.model, loaded.tokenizer, "It", max_new_tokens=3)) == 3


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker torchrun started for ``rank`` (found by its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_killed_rank_fails_the_job_and_keeps_the_checkpoint(tmp_path, text_file):
    from scratchgpt.training import resolve_checkpoint
    from scratchgpt.weights import load_checkpoint

    run = tmp_path / "killed"
    args = ["--data", str(text_file), "--out", str(run), *ARGS]
    long_run = ("--max-steps", "100000", "--max-epochs", "none")  # it must outlive the kill
    cmd = _torchrun_cmd(*args, *long_run, "--checkpoint-interval", "2")
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "latest").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.1)
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = _rank_pid(proc.pid, 1)
        assert victim is not None, "rank 1's process not found"
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # torchrun's failure summary names the dead rank. It is the root cause unless rank 0's own
    # error (it noticed the lost peer) is stamped before torchrun's next look at its workers, a
    # race a busy machine can lose; so the whole summary is searched. Rank 0 either notices the
    # lost peer first (and says so, naming the last checkpoint) or is stopped by torchrun's
    # SIGTERM.
    summary = out[out.find("Failures:") :] if "Failures:" in out else out
    killed = [part for part in summary.split("[") if "rank      : 1 (local_rank: 1)" in part]
    assert killed and "exitcode  : -9" in killed[0], out[-3000:]
    assert "lost contact with the other ranks" in out or "(SIGTERM)" in out, out[-3000:]
    loaded = load_checkpoint(resolve_checkpoint(run))
    assert loaded.model.cfg.n_layers == 2


def test_fsdp_refuses_lora():
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import GPTModel
    from scratchgpt.model.lora import replace_linear_with_lora

    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=32, context_length=8))
    replace_linear_with_lora(model, rank=2, alpha=4.0)
    with pytest.raises(ConfigError, match="LoRA with --strategy fsdp is not supported"):
        dd.wrap_model(model, "fsdp", torch.device("cpu"), dd.DistContext(0, 2, 0))


@pytest.mark.slow
def test_classifier_finetuning_under_torchrun(tmp_path):
    from scratchgpt.tasks.classify import classify, load_classifier

    data = tmp_path / "reviews.csv"
    rows = ["review,y"] + [
        f"{'great film' if i % 2 else 'awful plot'} {i},{'pos' if i % 2 else 'neg'}"
        for i in range(48)
    ]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "clf"
    cmd = _torchrun_cmd(
        "--random-init", "tiny", "--data", str(data), "--text-column", "review",
        "--label-column", "y", "--out", str(out), "--max-steps", "3", "--batch-size", "4",
        "--no-progress", "--no-plot", "--lr", "1e-2", "--device", "cpu",
    )  # fmt: skip
    cmd[cmd.index("pretrain")] = "finetune-classifier"
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("accuracy:") == 1  # rank 0 alone reports
    records = _records(out)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3]
    # Global batch 2 ranks x 4 texts: each step saw 8 texts.
    assert json.loads((out / "run.json").read_text())["distributed"]["global_batch"] == 8
    clf = load_classifier(out)
    assert {p.label for p in classify(clf, ["great film", "awful plot"])} <= {"pos", "neg"}


@pytest.mark.slow
def test_sigterm_stops_every_rank_after_the_same_step_with_a_checkpoint(tmp_path, text_file):
    from scratchgpt.training import resolve_checkpoint

    run = tmp_path / "stopped"
    args = ["--data", str(text_file), "--out", str(run), *ARGS]
    cmd = _torchrun_cmd(*args, "--max-steps", "100000", "--max-epochs", "none")
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "latest").exists():  # the first one, at step 3
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "status       interrupted" in out, out[-3000:]
    ckpt = resolve_checkpoint(run)
    step = int(ckpt.name.split("-")[1])
    assert step > 3
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    assert state["step"] == step and _records(run)[-1]["step"] == step
