"""A full disk, a read-only file system or a folder without write permission: every writer gives
one-line error naming the path and the cause, leaves no temporary files, and keeps what was there.

The failures are simulated in-process (an ``OSError`` with the real errno raised where the
operating system would raise it), because the tests may run as root, whom ``chmod`` does not stop.
Where unprivileged user namespaces work, the last tests also run the real thing on a small tmpfs.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchgpt.assets import asset_path
from scratchgpt.cli import main
from scratchgpt.errors import DataError, OutputError, ScratchGPTError
from scratchgpt.fileio import (
    atomic_folder,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    output_error,
)
from scratchgpt.training.run_dir import LOCK_FILE

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hidden(folder: Path) -> list[str]:
    """Temporary leftovers: the atomic writers name them ``.<name>.<hex>.tmp`` (the run folder's
    lock file, which stays by design, is not one)."""
    return sorted(p.name for p in folder.rglob(".*") if p.name != LOCK_FILE)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def steps(ckpts: Path) -> list[str]:
    return sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step-"))


def loads(checkpoint: Path) -> int:
    """The step of a training checkpoint that reads back complete."""
    from scratchgpt.config import GPTConfig
    from scratchgpt.training.state import read_training_checkpoint

    cfg = GPTConfig.load(checkpoint / "config.json")
    return read_training_checkpoint(checkpoint, cfg)["state"]["step"]


class _FullAfter(io.RawIOBase):
    """A writable file that takes ``budget`` bytes, then fails as a full disk does."""

    def __init__(self, f, budget: int) -> None:
        self._f, self._left = f, budget

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = memoryview(b).cast("B")
        if self._left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(b), self._left)
        self._f.write(b[:n])
        self._left -= n
        return n

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._f.truncate(size)

    def close(self) -> None:
        super().close()
        self._f.close()


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder that refuses writes as a read-only mount does (EROFS from mkdir and open)."""
    root = (tmp_path / "ro").resolve()
    root.mkdir()
    (root / "old.json").write_text("{}\n")

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        return Path(os.path.abspath(os.fsdecode(path))).is_relative_to(root)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_mkdir, real_open, real_os_open = os.mkdir, io.open, os.open

    def mkdir(path, *a, **k):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            refuse(path)
        return real_mkdir(path, *a, **k)

    def open_(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    return root


# ---------------------------------------------------------------------------------------------
# The atomic helpers


def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    dest = tmp_path / "out.json"
    dest.write_text("old\n")

    def full(self, data):
        with open(self, "wb") as f:
            f.write(data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError) as e:
        atomic_write_json(dest, {"a": 1})
    message = str(e.value)
    assert f"cannot write {dest}: no space left on device" in message
    assert "\n" not in message and isinstance(e.value, ScratchGPTError)
    assert dest.read_text() == "old\n" and hidden(tmp_path) == []


def test_atomic_path_into_a_read_only_folder(read_only):
    with pytest.raises(OutputError, match="read-only file system"):
        atomic_write_bytes(read_only / "new.bin", b"x")
    with pytest.raises(OutputError, match=re.escape(f"cannot create {read_only / 'sub'}: read-")):
        atomic_write_bytes(read_only / "sub" / "new.bin", b"x")
    with pytest.raises(OutputError, match="read-only file system"), atomic_folder(read_only / "f"):
        pass
    assert sorted(p.name for p in read_only.iterdir()) == ["old.json"]


def test_a_full_disk_reported_only_by_fsync_publishes_nothing(tmp_path, monkeypatch):
    # Some file systems (NFS, delayed allocation) report a full disk only when flushing.
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError, match="no space left on device"):
        atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"old" and hidden(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
    ],
)
def test_every_disk_errno_is_translated_and_the_folder_removed(tmp_path, code, cause):
    dest = tmp_path / "ckpt"
    expected = re.escape(f"cannot write {dest}: {cause}")
    with pytest.raises(OutputError, match=expected), atomic_folder(dest) as tmp:
        (tmp / "a").write_text("x")
        raise OSError(code, os.strerror(code))
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="bad value"), atomic_path(tmp_path / "f"):
        raise ValueError("bad value")
    with pytest.raises(OSError) as e, atomic_path(tmp_path / "f"):
        raise OSError(errno.EIO, "I/O error")
    assert not isinstance(e.value, OutputError)
    # An input that cannot be read is not an output that cannot be written.
    with pytest.raises(DataError, match="input"), atomic_path(tmp_path / "f"):
        try:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), "/elsewhere/input.txt")
        except OSError:
            raise DataError("/elsewhere/input.txt: cannot read the input") from None
    with pytest.raises(PermissionError), atomic_path(tmp_path / "f"):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), "/elsewhere/input.txt")
    assert list(tmp_path.iterdir()) == []


def test_torch_and_safetensors_write_failures_are_recognised(tmp_path, monkeypatch):
    # safetensors reports the errno in its message; torch's zip writer, writing to a path,
    # reports only "unexpected pos": then the folder's free space tells.
    err = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "no space left on device" in str(output_error(err, tmp_path / "w"))
    torch_err = RuntimeError(
        "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
    )

    class Full:
        f_flag, f_bavail, f_bfree, f_frsize = 0, 0, 0, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: Full)
    assert "no space left on device" in str(output_error(torch_err, tmp_path / "w"))
    assert output_error(RuntimeError("something else"), tmp_path / "w") is None


def test_metrics_log_on_a_full_disk_keeps_whole_records(tmp_path):
    from scratchgpt.training.logging import MetricsLogger, read_metrics

    log = MetricsLogger(tmp_path)
    log.log({"step": 1, "train_loss": 1.0})
    log._f = _FullAfter(log._f, 5)  # the next record is cut after 5 bytes
    with pytest.raises(OutputError, match=r"metrics\.jsonl: no space left on device"):
        log.log({"step": 2, "train_loss": 0.5, "note": "x" * 100})
    log.close()  # must not raise again
    assert (tmp_path / "metrics.jsonl").read_text().endswith("}\n")
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_shard_writer_on_a_full_disk(tmp_path):
    from scratchgpt.data.shards import ShardWriter

    w = ShardWriter(tmp_path / "train-000.bin", 300)
    w._file = _FullAfter(w._file, 100)
    with pytest.raises(OutputError, match=r"train-000\.bin: no space left on device"), w:
        w.write(list(range(200)))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Commands


@pytest.fixture
def full_on_second_save(monkeypatch):
    """torch.save succeeds once, then the disk fills part way through the second file."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as raw:
                return real_save(obj, _FullAfter(raw, 4096), *args, **kwargs)
        return real_save(obj, _FullAfter(f, 4096), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return calls


PRETRAIN = [
    "pretrain", "--preset", "book-ch5", "--model", "tiny", "--max-steps", "3",
    "--checkpoint-interval", "1", "--sample-tokens", "0", "--no-progress", "--no-plot",
    "--no-eval-at-start", "--eval-interval", "100", "--peak-tflops", "1",
]  # fmt: skip


def test_pretrain_checkpoint_on_a_full_disk(tmp_path, capsys, full_on_second_save):
    run = tmp_path / "run"
    assert main([*PRETRAIN, "--out", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    ckpts = run / "checkpoints"
    assert f"cannot write {ckpts / 'step-000002'}: no space left on device" in line
    assert "step-000001" in line and "intact" in line
    assert line.endswith("then continue with --resume") and "resume=True" not in line
    assert steps(ckpts) == ["step-000001"]
    assert (ckpts / "latest").read_text().strip() == "step-000001"
    assert hidden(run) == []
    assert loads(ckpts / "step-000001") == 1


def test_prepare_into_a_read_only_folder(read_only, tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("hello world\n" * 50)
    out = read_only / "prepared"
    assert main(["prepare", str(text), "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "read-only file system" in line
    assert sorted(p.name for p in read_only.iterdir()) == ["old.json"]


def test_train_tokenizer_into_a_read_only_folder(read_only, capsys):
    out = read_only / "bpe.json"
    verdict = str(asset_path("the-verdict.txt"))
    args = ["train-tokenizer", verdict, "--vocab-size", "260", "--out", str(out), "--no-progress"]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {out}: read-only file system" in line
    assert sorted(p.name for p in read_only.iterdir()) == ["old.json"]


def test_respond_into_a_read_only_folder_fails_before_generating(
    read_only, tmp_path, capsys, monkeypatch
):
    from scratchgpt.config import GPTConfig
    from scratchgpt.data.instructions import load_instruction_records
    from scratchgpt.model import GPTModel
    from scratchgpt.tokenizers import get_tokenizer
    from scratchgpt.weights import save_checkpoint

    ckpt = tmp_path / "ckpt"
    model = GPTModel(GPTConfig.from_preset("tiny", vocab_size=50257, context_length=64))
    save_checkpoint(ckpt, model, get_tokenizer("gpt2"))
    data = tmp_path / "data.json"
    data.write_text(json.dumps(load_instruction_records()[:2]))
    import scratchgpt.tasks.instruct as instruct

    def never(*a, **k):
        raise AssertionError("generated before checking the output can be written")

    monkeypatch.setattr(instruct, "generate_responses", never)
    out = read_only / "responses.json"
    args = ["respond", "--checkpoint", str(ckpt), "--data", str(data), "--max-new-tokens", "2",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {out}: read-only file system" in line
    assert sorted(p.name for p in read_only.iterdir()) == ["old.json"]


def test_pretrain_into_a_read_only_folder(read_only, capsys):
    # The run folder itself cannot be created.
    out = read_only / "run"
    assert main([*PRETRAIN, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out}: read-only file system" in line
    assert sorted(p.name for p in read_only.iterdir()) == ["old.json"]


def test_data_download_into_a_read_only_cache(read_only, capsys):
    url = asset_path("the-verdict.txt").as_uri()
    cache = read_only / "cache"
    args = ["data", "download", "the-verdict", "--cache-dir", str(cache), "--url", url]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{cache}: read-only file system" in line


# ---------------------------------------------------------------------------------------------
# The real thing: a small tmpfs in a user namespace (skipped where that is not allowed)


def _userns_mounts() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_userns = pytest.mark.skipif(
    not _userns_mounts(), reason="unprivileged user namespaces with tmpfs mounts not available"
)


def _in_tmpfs(mount: Path, options: str, argv: list[str], copy: Path, tmp_path: Path):
    """Run ``python -m scratchgpt ARGV`` with a tmpfs mounted at ``mount``; afterwards its
    contents are copied to ``copy`` (the mount vanishes with the namespace)."""
    script = (
        'mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 3; "$@"; rc=$?; '
        'cp -a "$0"/. "$COPY"/ 2>/dev/null; exit $rc'
    )
    mount.mkdir(exist_ok=True)
    copy.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "COPY": str(copy),
    }
    cmd = ["unshare", "-Urm", "sh", "-c", script, str(mount), options, str(mount), "-",
           sys.executable, "-m", "scratchgpt", *argv]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)


@pytest.mark.slow
@needs_userns
def test_real_full_tmpfs_during_pretrain(tmp_path):
    mount, copy = tmp_path / "disk", tmp_path / "after"
    # A tiny checkpoint is ~38 MB: one fits, the second does not.
    proc = _in_tmpfs(mount, "size=60m", [*PRETRAIN, "--out", str(mount / "run")], copy, tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "step-000002: no space left on device" in line and "step-000001" in line
    ckpts = copy / "run" / "checkpoints"
    assert steps(ckpts) == ["step-000001"]
    assert (ckpts / "latest").read_text().strip() == "step-000001"
    assert hidden(copy) == []
    assert loads(ckpts / "step-000001") == 1


@pytest.mark.slow
@needs_userns
def test_real_read_only_mount_for_prepare_and_train_tokenizer(tmp_path):
    mount, copy = tmp_path / "disk", tmp_path / "after"
    text = tmp_path / "in.txt"
    text.write_text("hello world\n" * 50)
    for argv in (
        ["prepare", str(text), "--out", str(mount / "prepared"), "--no-progress"],
        [
            "train-tokenizer",
            str(text),
            "--vocab-size",
            "260",
            "--out",
            str(mount / "t.json"),
            "--no-progress",
        ],
    ):
        proc = _in_tmpfs(mount, "ro,size=1m", argv, copy, tmp_path)
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc.stderr)
        assert str(mount) in line and "read-only file system" in line
