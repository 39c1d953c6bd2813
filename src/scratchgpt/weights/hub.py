"""Pretrained GPT-2 by name: the download cache, and downloads from the Hugging Face hub.

A local folder or file works everywhere a model name does; names (``gpt2-small`` ...
``gpt2-xl``, or the hub's ``gpt2``, ``gpt2-medium`` ...) map to
``$SCRATCHGPT_CACHE/models/<name>`` (default ``~/.cache/scratchgpt/models/<name>``), which
``scratchgpt download NAME`` fills. Only downloads need a network.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from scratchgpt.errors import CheckpointError
from scratchgpt.fileio import PathLike, atomic_write_json

# Our name -> the hub repository holding the same weights as OpenAI's release.
GPT2_REPOS: dict[str, str] = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
# Other spellings users meet: the hub's names, and OpenAI's folder names (the book's "124M").
_ALIASES: dict[str, str] = {
    "gpt2": "gpt2-small",
    "124m": "gpt2-small",
    "355m": "gpt2-medium",
    "774m": "gpt2-large",
    "1558m": "gpt2-xl",
    **{repo.lower(): name for name, repo in GPT2_REPOS.items()},
}
DOWNLOAD_FILES = ("config.json", "model.safetensors")
# Written last, after the sha256 check: its presence means the download is complete and verified.
MARKER_FILE = "scratchgpt-download.json"


def canonical_model_name(name: str) -> str | None:
    """``gpt2-small`` for ``gpt2``, ``openai-community/gpt2``, ``124M``...; None if unknown."""
    key = name.strip().lower()
    if key in GPT2_REPOS:
        return key
    return _ALIASES.get(key)


def _known_names() -> str:
    return ", ".join(GPT2_REPOS)


def hub_repo(name: str) -> str:
    """The Hugging Face repository for a GPT-2 model name."""
    canonical = canonical_model_name(name)
    if canonical is None:
        raise CheckpointError(f"unknown model name {name!r}; known names: {_known_names()}")
    return GPT2_REPOS[canonical]


def cache_root(cache_dir: PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$SCRATCHGPT_CACHE``, else ``~/.cache/scratchgpt``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SCRATCHGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scratchgpt"


def model_cache_dir(name: str, cache_dir: PathLike | None = None) -> Path:
    """Where ``scratchgpt download NAME`` puts a model (whether or not it is there yet)."""
    canonical = canonical_model_name(name)
    if canonical is None:
        raise CheckpointError(f"unknown model name {name!r}; known names: {_known_names()}")
    return cache_root(cache_dir) / "models" / canonical


def _has_weights(folder: Path) -> bool:
    return all((folder / f).is_file() for f in DOWNLOAD_FILES)


def is_downloaded(folder: PathLike) -> bool:
    """True when ``download_gpt2`` finished and verified a download into ``folder``."""
    return _has_weights(Path(folder)) and (Path(folder) / MARKER_FILE).is_file()


def resolve_model_path(name_or_path: PathLike, cache_dir: PathLike | None = None) -> Path:
    """A local file or folder as is; a GPT-2 name -> its folder in the download cache."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    canonical = canonical_model_name(str(name_or_path))
    if canonical is None:
        raise CheckpointError(
            f"{name_or_path}: no such file or folder, and not a known model name "
            f"({_known_names()}); pass a checkpoint folder, a Hugging Face GPT-2 folder or a "
            ".safetensors file with config.json beside it"
        )
    folder = model_cache_dir(canonical, cache_dir)
    if not _has_weights(folder):
        raise CheckpointError(
            f"{canonical} is not downloaded (looked in {folder}). Run `scratchgpt download "
            f"{canonical}` (pretrained weights need a network), or pass the path of a GPT-2 "
            "folder (config.json + model.safetensors) instead of the name"
        )
    return folder


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    errors += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:
        pass
    return tuple(errors)


def _offline_error(repo: str, target: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"could not reach the Hugging Face hub to download {repo} ({why}); pretrained weights "
        "need a network. On a machine without one, copy a GPT-2 folder (config.json + "
        f"model.safetensors) here and pass its path instead of the name, or put it at {target}"
    )


def download_gpt2(name: str, dir: PathLike | None = None, *, force: bool = False) -> Path:
    """Download GPT-2 ``config.json`` + ``model.safetensors`` from the hub into ``dir`` (default:
    the cache folder of ``name``), verify the weights' sha256, and return the folder.

    An interrupted download resumes where it stopped; a complete, verified one is not fetched
    again unless ``force``.
    """
    canonical = canonical_model_name(name)
    if canonical is None:
        raise CheckpointError(f"unknown model name {name!r}; known names: {_known_names()}")
    repo = GPT2_REPOS[canonical]
    target = Path(dir).expanduser() if dir is not None else model_cache_dir(canonical)
    if not force and is_downloaded(target):
        return target
    try:
        import huggingface_hub
        from huggingface_hub import constants as hub_constants
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise CheckpointError(
            "downloading needs huggingface_hub: pip install 'scratchgpt[hf]'"
        ) from None
    if _offline_env() or hub_constants.HF_HUB_OFFLINE:
        raise _offline_error(repo, target, "HF_HUB_OFFLINE is set")

    try:
        info = huggingface_hub.HfApi().model_info(repo, files_metadata=True)
        sibling = next((s for s in info.siblings or [] if s.rfilename == "model.safetensors"), None)
        if sibling is None or not sibling.lfs:
            raise CheckpointError(f"{repo}: the hub lists no model.safetensors with a checksum")
        expected = sibling.lfs["sha256"]
        target.mkdir(parents=True, exist_ok=True)
        # The weights first: config.json + weights without the marker reads as "incomplete".
        for filename in reversed(DOWNLOAD_FILES):
            huggingface_hub.hf_hub_download(
                repo, filename, revision=info.sha, local_dir=target, force_download=force
            )
    except _network_errors() as e:
        raise _offline_error(repo, target, f"{type(e).__name__}: {e}") from None
    except HfHubHTTPError as e:
        raise CheckpointError(f"the Hugging Face hub refused to serve {repo}: {e}") from None

    weights = target / "model.safetensors"
    got = sha256_file(weights)
    if got != expected:
        weights.unlink(missing_ok=True)
        raise CheckpointError(
            f"{weights}: sha256 {got} does not match the hub's {expected}; the file was deleted, "
            f"run `scratchgpt download {canonical}` again"
        )
    marker = {"repo": repo, "revision": info.sha, "sha256": expected, "files": list(DOWNLOAD_FILES)}
    atomic_write_json(target / MARKER_FILE, marker)
    return target
