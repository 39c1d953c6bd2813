"""`scratchgpt download` through the real huggingface_hub client (its HTTP stack, model_info
parsing, hf_hub_download into a folder) against a small HTTP stand-in for the hub on this
machine (HF_ENDPOINT): a sharded Qwen3 repository downloads and verifies, and a gated Llama
repository gives the one-line license/token message. Nothing leaves the machine."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

pytest.importorskip("huggingface_hub")

SRC = str(Path(__file__).resolve().parents[1] / "src")
REVISION = "0123456789abcdef0123456789abcdef01234567"
SHARDS = {"model-00001-of-00002.safetensors": b"1" * 5000,
          "model-00002-of-00002.safetensors": b"2" * 7000}  # fmt: skip
INDEX = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                        "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
FILES = {
    "config.json": b'{"model_type": "qwen3"}',
    "generation_config.json": b"{}",
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "README.md": b"# card",
    "model.safetensors.index.json": json.dumps(INDEX).encode(),
    **SHARDS,
}
GATED = {"meta-llama/Llama-3.2-1B"}


class StandInHub(http.server.BaseHTTPRequestHandler):
    """The hub's two endpoints the client uses: /api/models/REPO (the listing, with LFS sha256
    for .safetensors files) and /REPO/resolve/REVISION/FILE (HEAD for metadata, GET for bytes);
    gated repositories answer file requests with 401 and X-Error-Code: GatedRepo."""

    requests: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _listing(self, repo: str) -> None:
        siblings = []
        for name, body in FILES.items():
            sibling = {"rfilename": name, "size": len(body)}
            if name.endswith(".safetensors"):
                sha = hashlib.sha256(body).hexdigest()
                sibling["lfs"] = {"sha256": sha, "size": len(body), "pointerSize": 130}
            siblings.append(sibling)
        self._send(200, json.dumps({"id": repo, "sha": REVISION, "siblings": siblings}).encode())

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _file(self) -> None:
        repo, _, rest = self.path.split("?")[0].lstrip("/").partition("/resolve/")
        name = rest.partition("/")[2]
        if repo in GATED:
            headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to {repo} is "
                       "restricted. You must have access to it and be authenticated."}  # fmt: skip
            return self._send(401, b"", headers)
        if name not in FILES:
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
        body = FILES[name]
        headers = {"X-Repo-Commit": REVISION, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
        if name.endswith(".safetensors"):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(body).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(body))
        self._send(200, body, headers)

    def do_HEAD(self) -> None:
        self.requests.append(f"HEAD {self.path}")
        self._file()

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        if self.path.startswith("/api/models/"):
            repo = "/".join(self.path.split("?")[0].split("/")[3:5])
            return self._listing(repo)
        self._file()


@pytest.fixture
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandInHub.requests = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def _download(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        SCRATCHGPT_CACHE=str(tmp_path / "cache"),
        HF_HOME=str(tmp_path / "hf"),  # no token file of this machine's user
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_ETAG_TIMEOUT="30",
        HF_HUB_DOWNLOAD_TIMEOUT="30",
    )
    return subprocess.run(
        [sys.executable, "-m", "scratchgpt", "download", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_sharded_download_through_the_real_client(tmp_path, hub):
    proc = _download(tmp_path, hub, "Qwen/Qwen3-0.6B")
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "cache" / "models" / "qwen3-0.6b"
    assert proc.stdout.strip() == str(folder)
    for name, body in FILES.items():
        assert (folder / name).is_file() == (name != "README.md"), name
        if name != "README.md":
            assert (folder / name).read_bytes() == body
    marker = json.loads((folder / "scratchgpt-download.json").read_text())
    assert marker["revision"] == REVISION
    assert marker["weights_sha256"] == {n: hashlib.sha256(b).hexdigest() for n, b in SHARDS.items()}
    # Pinned to the revision the listing reported.
    assert all(f"/resolve/{REVISION}/" in r for r in StandInHub.requests if "/resolve/" in r)
    # Complete: a second run fetches nothing.
    StandInHub.requests = []
    again = _download(tmp_path, hub, "qwen3-0.6b")
    assert again.returncode == 0 and "already downloaded" in again.stderr
    assert StandInHub.requests == []


def test_gated_repository_through_the_real_client(tmp_path, hub):
    proc = _download(tmp_path, hub, "llama3.2-1b")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and proc.stdout == ""
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: meta-llama/Llama-3.2-1B is a gated model and no Hugging Face ")
    assert f"accept its license on {hub}/meta-llama/Llama-3.2-1B" in line
    assert "`hf auth login` or the HF_TOKEN environment variable" in line
    folder = tmp_path / "cache" / "models" / "llama3.2-1b"
    assert not (folder / "scratchgpt-download.json").exists()
