"""Pretrained GPT-2 by name: the download cache, and downloads from the Hugging Face hub.

A local folder or file works everywhere a model name does; names (``gpt2-small`` ...
``gpt2-xl``, or the hub's ``gpt2``, ``gpt2-medium`` ...) map to
``$SCRATCHGPT_CACHE/models/<name>`` (default ``~/.cache/scratchgpt/models/<name>``), which
``scratchgpt download NAME`` fills. Only downloads need a network.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

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


# Errnos of a machine that cannot reach a host (ConnectionError covers refused/reset/aborted).
_UNREACHABLE_ERRNOS = frozenset(
    getattr(errno, n)
    for n in ("ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "EHOSTDOWN", "ETIMEDOUT")
    if hasattr(errno, n)
)
# HTTP client libraries the hub client has used; their transport errors (DNS, refused, timeout,
# TLS, proxy) are recognised by class name so no particular one (httpx, httpx2, requests ...)
# needs to be installed or imported here.
_TRANSPORT_MODULES = ("httpx", "httpcore", "requests", "urllib3", "aiohttp")
_TRANSPORT_CLASSES = frozenset(
    {"TransportError", "NetworkError", "ConnectError", "TimeoutException", "ConnectionError",
     "Timeout", "ProxyError", "SSLError", "NewConnectionError", "MaxRetryError",
     "ClientConnectionError"}
)  # fmt: skip


def _is_network_error(error: BaseException) -> bool:
    """Whether ``error`` itself says the hub could not be reached (not that it refused)."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
        return True  # includes the hub client's OfflineModeIsEnabled
    if isinstance(error, OSError) and error.errno in _UNREACHABLE_ERRNOS:
        return True
    for klass in type(error).__mro__:
        top = klass.__module__.split(".")[0]
        if top.startswith(_TRANSPORT_MODULES) and klass.__name__ in _TRANSPORT_CLASSES:
            return True
    return False


def network_failure(error: BaseException) -> BaseException | None:
    """The connection failure behind ``error`` (itself, or down its chain of causes), or None.

    The hub client raises transport errors as they are from metadata calls, and wraps them in a
    ``LocalEntryNotFoundError`` ("not in the local cache") from file downloads."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_network_error(current):
            return current
        current = current.__cause__ or current.__context__
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    # Offline without a recorded cause: the client only says the file is not cached.
    return error if isinstance(error, LocalEntryNotFoundError) else None


def _short(error: BaseException, limit: int = 160) -> str:
    """The error's message on one line, shortened."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_host() -> str:
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:
        endpoint = "https://huggingface.co"
    return urlsplit(endpoint).netloc or endpoint


def _offline_error(
    repo: str, target: Path, why: str, fix: str = "check the network"
) -> CheckpointError:
    return CheckpointError(
        f"cannot reach {_hub_host()} to download {repo} ({why}); {fix}, or, on a machine "
        "without one, copy a downloaded GPT-2 folder (config.json + model.safetensors) to "
        f"{target} or pass its path wherever a model name goes"
    )


def check_download_dir(target: PathLike) -> None:
    """A CheckpointError unless ``target`` is a folder or can become one."""
    p = Path(target).expanduser()
    if p.exists() and not p.is_dir():
        raise CheckpointError(f"{p}: exists and is not a folder; choose a folder to download into")


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
    check_download_dir(target)
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
        raise _offline_error(
            repo, target, "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to use the network"
        )

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
    except CheckpointError:
        raise
    except HfHubHTTPError as e:
        # The hub answered, with an error status (unknown repository, rate limit, outage).
        raise CheckpointError(
            f"{_hub_host()} refused to serve {repo}: {_short(e)}; try again later"
        ) from None
    except Exception as e:
        cause = network_failure(e)
        if cause is None:
            raise
        raise _offline_error(repo, target, _short(cause)) from None

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
