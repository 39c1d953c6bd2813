"""Pretrained models by name: the download cache, and downloads from the Hugging Face hub.

A local folder or file works everywhere a model name does; names (``gpt2-small`` ...
``gpt2-xl``, ``llama3.2-1b``, ``qwen3-0.6b`` ..., or the hub's own repository names, see
:mod:`~scratchgpt.weights.hub_names`) map to ``$SCRATCHGPT_CACHE/models/<name>`` (default
``~/.cache/scratchgpt/models/<name>``), which ``scratchgpt download NAME`` fills. Only
downloads need a network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, atomic_write_json
from scratchgpt.fileio import cache_root as _cache_root
from scratchgpt.weights.hub_errors import hub_host, hub_refusal, network_failure, short
from scratchgpt.weights.hub_fetch import (
    INDEX_FILE,
    TOKENIZER_FILES,
    fetch_verified,
    sha256_file,
    shard_names,
)
from scratchgpt.weights.hub_names import (
    GPT2_REPOS,
    HUB_MODELS,
    HubModel,
    canonical_model_name,
    hub_model,
    hub_repo,
    known_names,
    unknown_name_error,
)

__all__ = [
    "DOWNLOAD_FILES",
    "GPT2_REPOS",
    "HUB_MODELS",
    "INDEX_FILE",
    "MARKER_FILE",
    "HubModel",
    "cache_root",
    "canonical_model_name",
    "check_download_dir",
    "download_gpt2",
    "download_model",
    "hub_model",
    "hub_repo",
    "is_downloaded",
    "model_cache_dir",
    "network_failure",
    "resolve_model_path",
    "sha256_file",
]

# GPT-2: the two files scratchgpt reads (its tokenizer is OpenAI's, built in).
DOWNLOAD_FILES = ("config.json", "model.safetensors")
# Written last, after the sha256 check: its presence means the download is complete and verified.
MARKER_FILE = "scratchgpt-download.json"


def cache_root(cache_dir: PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$SCRATCHGPT_CACHE``, else ``~/.cache/scratchgpt``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return _cache_root()


def model_cache_dir(name: str, cache_dir: PathLike | None = None) -> Path:
    """Where ``scratchgpt download NAME`` puts a model (whether or not it is there yet)."""
    return cache_root(cache_dir) / "models" / hub_model(name).name


def _weight_files(folder: Path) -> list[str] | None:
    """The weight files a folder needs: model.safetensors, or the shards its index names; None
    when neither is there (or the index cannot be read)."""
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    try:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        return [INDEX_FILE, *shard_names(index, INDEX_FILE)]
    except (OSError, ValueError, CheckpointError):
        return None


def _has_weights(folder: Path) -> bool:
    weights = _weight_files(folder)
    return (
        (folder / "config.json").is_file()
        and weights is not None
        and all((folder / f).is_file() for f in weights)
    )


def is_downloaded(folder: PathLike) -> bool:
    """True when a download into ``folder`` finished and was verified: the completion marker is
    there, and so is every file it lists (config.json, the weights or all their shards...)."""
    folder = Path(folder)
    if not (_has_weights(folder) and (folder / MARKER_FILE).is_file()):
        return False
    try:
        files = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(files, list) and all((folder / str(f)).is_file() for f in files)


def _folder_kind(model: HubModel) -> str:
    """What a local copy of ``model`` is, for messages."""
    if model.family == "gpt2":
        return "a GPT-2 folder (config.json + model.safetensors)"
    return (
        f"a Hugging Face folder of {model.repo} (config.json, {', '.join(TOKENIZER_FILES)}, and "
        "model.safetensors or its shards with model.safetensors.index.json)"
    )


def resolve_model_path(name_or_path: PathLike, cache_dir: PathLike | None = None) -> Path:
    """A local file or folder as is; a model name -> its folder in the download cache."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    canonical = canonical_model_name(str(name_or_path))
    if canonical is None:
        raise CheckpointError(
            f"{name_or_path}: no such file or folder, and not a known model name "
            f"({known_names()}); pass a checkpoint folder, a Hugging Face folder (GPT-2, Llama "
            "3.x, Qwen3, Gemma 3) or a .safetensors file with config.json beside it"
        )
    model = HUB_MODELS[canonical]
    folder = model_cache_dir(canonical, cache_dir)
    if not _has_weights(folder):
        access = (
            "a network, a Hugging Face token and the license accepted on the model's page"
            if model.gated
            else "a network"
        )
        raise CheckpointError(
            f"{canonical} is not downloaded (looked in {folder}). Run `scratchgpt download "
            f"{canonical}` (pretrained weights need {access}), or pass the path of "
            f"{_folder_kind(model)} instead of the name"
        )
    return folder


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_error(
    model: HubModel, target: Path, why: str, fix: str = "check the network"
) -> CheckpointError:
    return CheckpointError(
        f"cannot reach {hub_host()} to download {model.repo} ({why}); {fix}, or, on a machine "
        f"without one, copy a downloaded {_folder_kind(model).removeprefix('a ')} to {target} "
        "or pass its path wherever a model name goes"
    )


def check_download_dir(target: PathLike) -> None:
    """A CheckpointError unless ``target`` is a folder or can become one."""
    p = Path(target).expanduser()
    if p.exists() and not p.is_dir():
        raise CheckpointError(f"{p}: exists and is not a folder; choose a folder to download into")


def download_model(
    name: str,
    dir: PathLike | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download a model by name (``gpt2-small``, ``llama3.2-1b``, ``qwen3-0.6b``, a hub
    repository name ...) into ``dir`` (default: its cache folder) and return the folder.

    The files are chosen from the hub's listing of the repository: config.json, the tokenizer
    files (Llama 3.x / Qwen3), generation_config.json and friends when listed, and the weights,
    ``model.safetensors`` or ``model.safetensors.index.json`` with every shard it names. Every
    weight file's sha256 is checked against the hub's; the completion marker is written last.
    An interrupted download resumes where it stopped; a complete, verified one is not fetched
    again unless ``force``. ``log`` receives a line naming the files and their total size.
    Gated repositories (Meta's), unknown names and a missing network are CheckpointErrors that
    say what to do.
    """
    canonical = canonical_model_name(name)
    if canonical is None:
        raise unknown_name_error(name)
    model = HUB_MODELS[canonical]
    target = Path(dir).expanduser() if dir is not None else model_cache_dir(canonical)
    check_download_dir(target)
    if not force and is_downloaded(target):
        return target
    try:
        import huggingface_hub  # noqa: F401
        from huggingface_hub import constants as hub_constants
    except ImportError:
        raise CheckpointError(
            "downloading needs huggingface_hub: pip install 'scratchgpt[hf]'"
        ) from None
    if _offline_env() or hub_constants.HF_HUB_OFFLINE:
        raise _offline_error(
            model, target, "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to use the network"
        )
    try:
        marker = fetch_verified(model, target, force=force, log=log)
    except CheckpointError:
        raise
    except Exception as e:
        refusal = hub_refusal(model.repo, e)
        if refusal is not None:
            raise refusal from None
        cause = network_failure(e)
        if cause is None:
            raise
        raise _offline_error(model, target, short(cause)) from None
    atomic_write_json(target / MARKER_FILE, marker)
    return target


def download_gpt2(name: str, dir: PathLike | None = None, *, force: bool = False) -> Path:
    """Download GPT-2 ``config.json`` + ``model.safetensors`` from the hub into ``dir`` (default:
    the cache folder of ``name``), verify the weights' sha256, and return the folder.

    The same as :func:`download_model`, for GPT-2 names only.
    """
    canonical = canonical_model_name(name)
    if canonical is None:
        raise unknown_name_error(name)
    if HUB_MODELS[canonical].family != "gpt2":
        raise CheckpointError(
            f"{name!r} is not a GPT-2 model name ({', '.join(GPT2_REPOS)}); "
            "use download_model for other models"
        )
    return download_model(canonical, dir, force=force)
