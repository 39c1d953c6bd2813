"""`download_model` / `scratchgpt download` for Llama 3.x and Qwen3 against a stand-in for the
hub (no network): the files chosen from the hub's listing (single or sharded safetensors, the
tokenizer files), the sha256 of every weight file, the completion marker, and the one-line errors
for gated and unknown repositories raised as the hub client's real exceptions."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from scratchgpt.cli import main
from scratchgpt.errors import CheckpointError
from scratchgpt.weights.hub import download_model, is_downloaded, resolve_model_path

huggingface_hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402
from huggingface_hub.utils import hf_raise_for_status  # noqa: E402

INDEX = "model.safetensors.index.json"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    return tmp_path / "cache"


def hub_error(status: int, code: str, url: str = "https://huggingface.co/api/models/x"):
    """The hub client's own exception for an HTTP answer with this status and X-Error-Code,
    made by the client from a response of its own HTTP library."""
    http = importlib.import_module(HfHubHTTPError.__mro__[1].__module__.split(".")[0])
    response = http.Response(
        status, headers={"X-Error-Code": code}, request=http.Request("GET", url)
    )
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as e:
        return e
    raise AssertionError("hf_raise_for_status raised nothing")


class FakeHub:
    """model_info lists ``files`` (LFS metadata with sha256 for .safetensors files, or for all of
    ``sums``); hf_hub_download writes them into local_dir and records the order."""

    def __init__(self, files: dict[str, bytes], sums: dict[str, str] | None = None) -> None:
        self.files = files
        self.sums = {n: hashlib.sha256(b).hexdigest() for n, b in files.items()
                     if n.endswith(".safetensors")} | (sums or {})  # fmt: skip
        self.downloads: list[str] = []
        self.info_error: BaseException | None = None
        self.download_error: BaseException | None = None

    def install(self, monkeypatch) -> FakeHub:
        hub = self

        def model_info(self, repo, files_metadata=False, **kwargs):
            assert files_metadata
            if hub.info_error is not None:
                raise hub.info_error
            siblings = [
                SimpleNamespace(rfilename=n, size=len(b), lfs=(
                    {"sha256": hub.sums[n], "size": len(b), "pointer_size": 1}
                    if n in hub.sums else None))
                for n, b in hub.files.items()
            ]  # fmt: skip
            return SimpleNamespace(sha="rev123", siblings=siblings)

        def hf_hub_download(repo, filename, *, revision, local_dir, force_download=False):
            assert revision == "rev123"
            if hub.download_error is not None:
                raise hub.download_error
            hub.downloads.append(filename)
            path = Path(local_dir) / filename
            path.write_bytes(hub.files[filename])
            return str(path)

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
        return self


def sharded_repo(**extra: bytes) -> dict[str, bytes]:
    shards = {"model-00001-of-00002.safetensors": b"shard one",
              "model-00002-of-00002.safetensors": b"shard two"}  # fmt: skip
    index = {
        "metadata": {},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors",
        },
    }
    return {
        "config.json": b'{"model_type": "qwen3"}',
        "generation_config.json": b"{}",
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
        "README.md": b"# card",
        ".gitattributes": b"",
        "original/consolidated.00.pth": b"pickle",
        "model-00003-of-00003.safetensors": b"not named by the index",
        INDEX: json.dumps(index).encode(),
        **shards,
        **extra,
    }  # fmt: skip


def test_sharded_download_fetches_what_the_index_names(monkeypatch, cache, capsys):
    hub = FakeHub(sharded_repo()).install(monkeypatch)
    assert main(["download", "Qwen/Qwen3-0.6B"]) == 0
    folder = cache / "models" / "qwen3-0.6b"
    out, err = capsys.readouterr()
    assert out.strip() == str(folder)
    assert f"downloading qwen3-0.6b (Qwen/Qwen3-0.6B) to {folder}" in err
    assert "7 files" in err and "model-00002-of-00002.safetensors" in err
    # The index first (it names the shards), the shards, then the small files, config.json last.
    assert hub.downloads == [
        INDEX, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json",
    ]  # fmt: skip
    marker = json.loads((folder / "scratchgpt-download.json").read_text())
    assert marker["repo"] == "Qwen/Qwen3-0.6B" and marker["revision"] == "rev123"
    assert sorted(marker["files"]) == sorted(hub.downloads)
    assert (
        marker["weights_sha256"]["model-00002-of-00002.safetensors"]
        == hub.sums["model-00002-of-00002.safetensors"]
    )
    assert is_downloaded(folder) and resolve_model_path("qwen3-0.6b") == folder
    assert download_model("qwen3-0.6b") == folder and len(hub.downloads) == 7  # nothing again
    (folder / "model-00002-of-00002.safetensors").unlink()
    assert not is_downloaded(folder)
    with pytest.raises(CheckpointError, match=r"qwen3-0\.6b is not downloaded"):
        resolve_model_path("qwen3-0.6b")
    download_model("qwen3-0.6b")  # an incomplete folder is fetched again
    assert is_downloaded(folder) and len(hub.downloads) == 14


def test_single_file_preferred_and_optional_files_when_listed(monkeypatch, cache):
    files = sharded_repo(**{"model.safetensors": b"one file", "chat_template.jinja": b"{{ x }}",
                            "special_tokens_map.json": b"{}"})  # fmt: skip
    hub = FakeHub(files).install(monkeypatch)
    folder = download_model("llama3.2-1b-instruct", cache / "dl")
    assert hub.downloads == [
        "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
        "special_tokens_map.json", "chat_template.jinja", "config.json",
    ]  # fmt: skip
    marker = json.loads((folder / "scratchgpt-download.json").read_text())
    assert marker["sha256"] == hashlib.sha256(b"one file").hexdigest()
    assert marker["repo"] == "meta-llama/Llama-3.2-1B-Instruct"


def test_a_shard_with_the_wrong_checksum_is_deleted(monkeypatch, cache):
    bad = "model-00002-of-00002.safetensors"
    FakeHub(sharded_repo(), sums={bad: "0" * 64}).install(monkeypatch)
    with pytest.raises(CheckpointError) as err:
        download_model("qwen3-0.6b")
    folder = cache / "models" / "qwen3-0.6b"
    assert f"{folder / bad}: sha256 " in str(err.value)
    assert "does not match the hub's 0000" in str(err.value)
    assert "run `scratchgpt download qwen3-0.6b` again" in str(err.value)
    assert not (folder / bad).exists() and not (folder / "scratchgpt-download.json").exists()
    assert (folder / "model-00001-of-00002.safetensors").is_file()  # verified, kept for a rerun
    assert not is_downloaded(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tokenizer.json": None}, r"Qwen/Qwen3-0.6B: the hub lists no tokenizer.json; "),
        ({INDEX: None, "model-00001-of-00002.safetensors": None}, r"lists no model.safetensors "
         r"or model.safetensors.index.json; scratchgpt reads safetensors weights only"),
        ({"model-00001-of-00002.safetensors": None},
         r"lists no model-00001-of-00002.safetensors with a checksum"),
        ({INDEX: b'{"weight_map": {"a": "../evil.safetensors"}}'},
         r"model.safetensors.index.json: weight_map names '../evil.safetensors', not a"),
        ({INDEX: b'{"metadata": {}}'}, r"index.json: no weight_map naming the shard files"),
    ],
)  # fmt: skip
def test_listings_that_cannot_be_downloaded(monkeypatch, cache, change, message):
    files = sharded_repo()
    for name, content in change.items():
        if content is None:
            del files[name]
        else:
            files[name] = content
    FakeHub(files).install(monkeypatch)
    with pytest.raises(CheckpointError, match=message):
        download_model("qwen3-0.6b")
    assert not (cache / "models" / "qwen3-0.6b" / "scratchgpt-download.json").exists()


def test_gated_model_cli_message(monkeypatch, cache, capsys):
    hub = FakeHub(sharded_repo()).install(monkeypatch)
    hub.info_error = hub_error(401, "GatedRepo")
    assert main(["download", "llama3.2-1b"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: meta-llama/Llama-3.2-1B is a gated model and no Hugging Face "
                           "token is set on this machine: accept its license on "
                           "https://huggingface.co/meta-llama/Llama-3.2-1B")  # fmt: skip
    assert "`hf auth login` or the HF_TOKEN environment variable" in line
    assert not (cache / "models" / "llama3.2-1b" / "scratchgpt-download.json").exists()


def test_gated_model_with_a_token_and_on_forced_file_download(monkeypatch, cache):
    hub = FakeHub(sharded_repo()).install(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    # With force_download the client raises ValueError from the refusal of its HEAD request.
    try:
        raise ValueError("Force download failed due to the above error.") from hub_error(
            403, "GatedRepo"
        )
    except ValueError as e:
        hub.download_error = e
    with pytest.raises(CheckpointError, match=r"gated model and the token in use has no access"):
        download_model("llama3.1-8b", force=True)


def test_unknown_repository_and_other_refusals(monkeypatch, cache):
    hub = FakeHub(sharded_repo()).install(monkeypatch)
    hub.info_error = hub_error(404, "RepoNotFound")
    with pytest.raises(CheckpointError, match=r"huggingface.co has no repository Qwen/Qwen3-8B "
                       r"this machine may read .*check the name, or authenticate"):  # fmt: skip
        download_model("qwen3-8b")
    hub.info_error = hub_error(503, "")
    with pytest.raises(
        CheckpointError, match=r"refused to serve Qwen/Qwen3-8B: .*503.*; try again later"
    ):
        download_model("qwen3-8b")


def test_downloaded_name_loads(monkeypatch, cache):
    """A tiny Qwen3 exported as a sharded Hugging Face folder, served by the stand-in hub:
    after the download, load_model("qwen3-0.6b") returns the same model."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    import scratchgpt.weights.load as load_module
    from scratchgpt.config import GPTConfig
    from scratchgpt.model import build_model
    from scratchgpt.weights import load_model
    from scratchgpt.weights.hf import save_hf_model

    torch.manual_seed(0)
    model = build_model(GPTConfig.from_preset("qwen3-tiny", vocab_size=97)).eval()
    src = save_hf_model(model, cache.parent / "export")
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    files = {"config.json": (src / "config.json").read_bytes(),
             "tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}  # fmt: skip
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, cache.parent / shard, metadata={"format": "pt"})
        files[shard] = (cache.parent / shard).read_bytes()
        weight_map.update(dict.fromkeys(part, shard))
    files[INDEX] = json.dumps({"weight_map": weight_map}).encode()
    FakeHub(files).install(monkeypatch)
    download_model("qwen3-0.6b")
    # The tokenizer files here are placeholders; the weights are what this test is about.
    monkeypatch.setattr(load_module, "hf_folder_tokenizer", lambda files: None)
    loaded = load_model("qwen3-0.6b")
    assert loaded.format == "hf-qwen3" and loaded.config.n_layers == model.cfg.n_layers
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), model(ids), rtol=0, atol=1e-6)
