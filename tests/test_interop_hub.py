"""Model names, the download cache and `scratchgpt download`, without ever touching a network:
the hub is either switched off (HF_HUB_OFFLINE=1) or replaced by local stand-ins."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from scratchgpt.cli import main
from scratchgpt.errors import CheckpointError
from scratchgpt.weights import (
    GPT2_REPOS,
    canonical_model_name,
    download_gpt2,
    hub_repo,
    model_cache_dir,
    resolve_model_path,
)

huggingface_hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_map_to_hub_repos():
    assert hub_repo("gpt2-small") == "openai-community/gpt2"
    assert hub_repo("gpt2") == "openai-community/gpt2"
    assert hub_repo("openai-community/gpt2-medium") == "openai-community/gpt2-medium"
    assert hub_repo("gpt2-large") == "openai-community/gpt2-large"
    assert hub_repo("GPT2-XL") == "openai-community/gpt2-xl"
    assert canonical_model_name("124M") == "gpt2-small"
    assert canonical_model_name("1558M") == "gpt2-xl"
    assert canonical_model_name("gpt3") is None
    assert sorted(GPT2_REPOS) == ["gpt2-large", "gpt2-medium", "gpt2-small", "gpt2-xl"]
    with pytest.raises(CheckpointError, match=r"unknown model name 'gpt3'.*gpt2-small"):
        hub_repo("gpt3")


def test_cache_location(cache, tmp_path):
    assert model_cache_dir("gpt2") == cache / "models" / "gpt2-small"
    assert (
        model_cache_dir("gpt2-xl", tmp_path / "other") == tmp_path / "other" / "models" / "gpt2-xl"
    )


def test_resolve_model_path(cache, tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model_path(local) == local  # a local folder is used as is
    with pytest.raises(
        CheckpointError, match=r"not downloaded.*scratchgpt download gpt2-medium.*network"
    ):
        resolve_model_path("gpt2-medium")
    folder = cache / "models" / "gpt2-medium"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert resolve_model_path("gpt2-medium") == folder
    assert resolve_model_path("openai-community/gpt2-medium") == folder
    with pytest.raises(CheckpointError, match="no such file or folder, and not a known model name"):
        resolve_model_path(tmp_path / "typo")


def test_download_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError, match=r"cannot reach huggingface.co.*copy a downloaded GPT-2 folder"
    ):
        download_gpt2("gpt2-small", tmp_path / "dl")


def test_cli_download_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "gpt2-small"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach huggingface.co to download openai-community/gpt2" in err
    assert "Traceback" not in err
    assert main(["download", "gpt5"]) == 2
    assert "unknown model name 'gpt5'" in capsys.readouterr().err


def test_connection_errors_are_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    def unreachable(self, repo, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(CheckpointError, match=r"cannot reach huggingface.co.*Name or service"):
        download_gpt2("gpt2-small", tmp_path / "dl")


class FakeHub:
    """Stands in for the hub: model_info with LFS checksums, hf_hub_download writing files."""

    def __init__(self, files: dict[str, bytes], listed_sha: str | None = None) -> None:
        self.files = files
        self.listed_sha = listed_sha or hashlib.sha256(files["model.safetensors"]).hexdigest()
        self.downloads: list[str] = []

    def install(self, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        hub = self

        def model_info(self, repo, files_metadata=False, **kwargs):
            assert files_metadata
            lfs = {"sha256": hub.listed_sha, "size": 1, "pointer_size": 1}
            siblings = [SimpleNamespace(rfilename="config.json", lfs=None),
                        SimpleNamespace(rfilename="model.safetensors", lfs=lfs)]  # fmt: skip
            return SimpleNamespace(sha="abc123", siblings=siblings)

        def hf_hub_download(repo, filename, *, revision, local_dir, force_download=False):
            assert revision == "abc123"
            hub.downloads.append(filename)
            path = Path(local_dir) / filename
            path.write_bytes(hub.files[filename])
            return str(path)

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


FILES = {"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b"weights"}


def test_download_verifies_and_skips_when_complete(monkeypatch, cache, capsys):
    hub = FakeHub(FILES)
    hub.install(monkeypatch)
    assert main(["download", "gpt2"]) == 0
    folder = cache / "models" / "gpt2-small"
    assert capsys.readouterr().out.strip() == str(folder)
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    marker = json.loads((folder / "scratchgpt-download.json").read_text())
    assert marker["repo"] == "openai-community/gpt2" and marker["revision"] == "abc123"
    assert resolve_model_path("gpt2-small") == folder
    assert sorted(hub.downloads) == ["config.json", "model.safetensors"]
    download_gpt2("gpt2-small")  # complete and verified: nothing fetched again
    assert len(hub.downloads) == 2
    download_gpt2("gpt2-small", force=True)
    assert len(hub.downloads) == 4


def test_download_checksum_mismatch(monkeypatch, tmp_path):
    FakeHub(FILES, listed_sha="0" * 64).install(monkeypatch)
    with pytest.raises(CheckpointError, match="does not match the hub's 0000"):
        download_gpt2("gpt2-small", tmp_path / "dl")
    assert not (tmp_path / "dl" / "model.safetensors").exists()
    assert not (tmp_path / "dl" / "scratchgpt-download.json").exists()
