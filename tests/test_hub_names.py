"""The registry of downloadable models: our names, the hub's names, families, presets, the cache
folder a name resolves to, and the `scratchgpt download` help. No network, no huggingface_hub."""

from __future__ import annotations

import pytest

from scratchgpt.cli import main
from scratchgpt.config import PRESETS, GPTConfig
from scratchgpt.errors import CheckpointError
from scratchgpt.weights.hub import (
    HUB_MODELS,
    canonical_model_name,
    download_gpt2,
    hub_repo,
    model_cache_dir,
    resolve_model_path,
)
from scratchgpt.weights.hub_names import hub_model, names_by_family


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "name, repo",
    [
        ("llama3.2-1b", "meta-llama/Llama-3.2-1B"),
        ("llama3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct"),
        ("llama3.2-3b", "meta-llama/Llama-3.2-3B"),
        ("llama3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct"),
        ("llama3.1-8b", "meta-llama/Llama-3.1-8B"),
        ("llama3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("qwen3-0.6b", "Qwen/Qwen3-0.6B"),
        ("qwen3-0.6b-base", "Qwen/Qwen3-0.6B-Base"),
        ("qwen3-1.7b", "Qwen/Qwen3-1.7B"),
        ("qwen3-1.7b-base", "Qwen/Qwen3-1.7B-Base"),
        ("qwen3-4b", "Qwen/Qwen3-4B"),
        ("qwen3-4b-base", "Qwen/Qwen3-4B-Base"),
        ("qwen3-8b", "Qwen/Qwen3-8B"),
        ("qwen3-8b-base", "Qwen/Qwen3-8B-Base"),
        ("gpt2-small", "openai-community/gpt2"),
    ],
)
def test_names_and_hub_names(name, repo):
    assert hub_repo(name) == repo
    # The hub's repository id and its bare name, in any case, are aliases of our name.
    for alias in (repo, repo.lower(), repo.upper(), repo.split("/")[1], f"  {repo} "):
        assert canonical_model_name(alias) == name, alias
    assert hub_model(name).gated == repo.startswith("meta-llama/")


def test_every_name_matches_a_preset_of_its_family():
    assert len(HUB_MODELS) == 4 + 6 + 10 + 4
    for name, model in HUB_MODELS.items():
        preset = name.removesuffix("-instruct").removesuffix("-base").removesuffix("-it")
        assert preset in PRESETS, name
        assert GPTConfig.from_preset(preset).family == model.family, name


def test_names_by_family():
    groups = names_by_family()
    assert list(groups) == ["GPT-2", "Llama 3.x", "Qwen3", "Gemma 3"]
    assert groups["Gemma 3"] == ["gemma3-270m", "gemma3-270m-it", "gemma3-1b", "gemma3-1b-it"]
    assert HUB_MODELS["gemma3-1b"].repo == "google/gemma-3-1b-pt" and HUB_MODELS["gemma3-1b"].gated
    assert HUB_MODELS["qwen3-30b-a3b-base"].repo == "Qwen/Qwen3-30B-A3B-Base"
    assert groups["GPT-2"] == ["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    assert "llama3.2-1b" in groups["Llama 3.x"] and "qwen3-0.6b-base" in groups["Qwen3"]
    assert sum(map(len, groups.values())) == len(HUB_MODELS)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(CheckpointError, match=r"'lama3.2-1b'; did you mean llama3.2-1b\?"):
        hub_repo("lama3.2-1b")
    with pytest.raises(CheckpointError, match=r"unknown model name 'qwen2-7b'.*qwen3-8b-base"):
        model_cache_dir("qwen2-7b")
    # A preset that is not a published model is no download name.
    assert canonical_model_name("qwen3-tiny") is None


def test_cache_folders_and_not_downloaded_messages(cache):
    assert model_cache_dir("Qwen/Qwen3-4B") == cache / "models" / "qwen3-4b"
    assert model_cache_dir("META-LLAMA/Llama-3.2-1B") == cache / "models" / "llama3.2-1b"
    with pytest.raises(CheckpointError) as err:
        resolve_model_path("meta-llama/Llama-3.2-1B")
    msg = str(err.value)
    assert "llama3.2-1b is not downloaded" in msg and str(cache / "models" / "llama3.2-1b") in msg
    assert "Run `scratchgpt download llama3.2-1b`" in msg and "token" in msg and "license" in msg
    with pytest.raises(CheckpointError, match=r"scratchgpt download qwen3-0.6b` \(pretrained"):
        resolve_model_path("qwen3-0.6b")
    # Half a sharded download is not a download.
    folder = cache / "models" / "qwen3-0.6b"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen3"}')
    index = '{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}'
    (folder / "model.safetensors.index.json").write_text(index)
    (folder / "model-1.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not downloaded"):
        resolve_model_path("qwen3-0.6b")
    (folder / "model-2.safetensors").write_bytes(b"")
    assert resolve_model_path("Qwen3-0.6B") == folder


def test_download_gpt2_is_for_gpt2_names():
    with pytest.raises(
        CheckpointError, match=r"'qwen3-0\.6b' is not a GPT-2 model name.*download_"
    ):
        download_gpt2("qwen3-0.6b")
    with pytest.raises(CheckpointError, match="unknown model name 'gpt3'"):
        download_gpt2("gpt3")


def test_cli_help_lists_the_names_by_family(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["download", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "GPT-2 only" not in out and "OpenAI's GPT-2 weights" not in out
    lines = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ")}
    assert "gpt2-small" in lines["GPT-2"]
    assert "llama3.2-1b," in lines["Llama 3.x"] and "qwen3-0.6b," in lines["Qwen3"]
    assert "HF_TOKEN" in out and "hf auth login" in out
