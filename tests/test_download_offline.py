"""`scratchgpt download` without a network, through the real huggingface_hub and its real HTTP
stack (whatever transport library it uses): one line on stderr, exit code 2, no traceback.

The hub endpoint points at a closed port of this machine (port 9, "discard", is not listening on
a test machine; the connection is refused at once), so nothing leaves the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _closed_port() -> int:
    """A local port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Our name, the repository the message names, the cache folder, what a local copy holds.
NAMES = [
    ("gpt2", "openai-community/gpt2", "gpt2-small", "GPT-2 folder (config.json + model.safetensors)"),
    ("llama3.2-1b", "meta-llama/Llama-3.2-1B", "llama3.2-1b", "Hugging Face folder of meta-llama/Llama-3.2-1B"),
    ("qwen3-0.6b", "Qwen/Qwen3-0.6B", "qwen3-0.6b", "Hugging Face folder of Qwen/Qwen3-0.6B (config.json, tokenizer.json"),
]  # fmt: skip


def _download(tmp_path: Path, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        SCRATCHGPT_CACHE=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "scratchgpt", "download", name],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    # The command announces the download on stderr first, then the error.
    errors = [ln for ln in lines if ln.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    return errors[0]


@pytest.mark.parametrize("name, repo, folder, local", NAMES)
def test_download_with_the_hub_unreachable(tmp_path, name, repo, folder, local):
    port = _closed_port()
    proc = _download(tmp_path, name, HF_ENDPOINT=f"http://127.0.0.1:{port}")
    err = _assert_one_line_error(proc)
    # The host tried (here the HF_ENDPOINT stand-in for huggingface.co) and what was fetched.
    assert f"cannot reach 127.0.0.1:{port} to download {repo}" in err
    # The cause in a few words, not the transport library's class path.
    assert "refused" in err.lower() or "connect" in err.lower()
    # Advice that exists on this command: a local folder instead of the name, or --dir.
    assert "check the network" in err
    assert f"copy a downloaded {local}" in err
    assert str(tmp_path / "cache" / "models" / folder) in err
    assert "--local-path" not in err and "local_path" not in err
    assert not (tmp_path / "cache" / "models" / folder / "scratchgpt-download.json").exists()


@pytest.mark.parametrize("name, repo, folder, local", NAMES)
def test_download_with_hf_hub_offline(tmp_path, name, repo, folder, local):
    proc = _download(tmp_path, name, HF_HUB_OFFLINE="1")
    err = _assert_one_line_error(proc)
    assert f"cannot reach huggingface.co to download {repo}" in err
    assert "HF_HUB_OFFLINE" in err
    assert f"downloading {folder} ({repo}) to " in proc.stderr


def test_transport_errors_of_any_http_stack_are_recognised():
    """By class name and module, so a new HTTP library of the hub client needs no import here."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from scratchgpt.weights.hub import network_failure

    transport = type("ConnectError", (Exception,), {"__module__": "httpx3._exceptions"})
    wrapped = LocalEntryNotFoundError("cannot find the requested files in the local cache")
    wrapped.__cause__ = transport("[Errno 111] Connection refused")
    assert network_failure(wrapped) is wrapped.__cause__
    assert network_failure(OSError(101, "Network is unreachable")) is not None
    # Not a connection problem: a full disk, a bug, an HTTP library's other errors.
    assert network_failure(OSError(28, "No space left on device")) is None
    assert network_failure(ValueError("bad")) is None
    other = type("DecodingError", (Exception,), {"__module__": "httpx3._exceptions"})
    assert network_failure(other("bad gzip")) is None
