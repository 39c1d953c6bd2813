"""What went wrong talking to the Hugging Face hub, in one line a user can act on.

Connection failures (no network, DNS, refused, timeouts, ``HF_HUB_OFFLINE``) are told apart from
the hub's refusals (a gated repository without an accepted license or token, an unknown or
private repository, an outage), whichever HTTP library the hub client uses underneath.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from scratchgpt.errors import CheckpointError

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


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes, outermost first (each once)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def network_failure(error: BaseException) -> BaseException | None:
    """The connection failure behind ``error`` (itself, or down its chain of causes), or None.

    The hub client raises transport errors as they are from metadata calls, and wraps them in a
    ``LocalEntryNotFoundError`` ("not in the local cache") from file downloads."""
    for current in _chain(error):
        if _is_network_error(current):
            return current
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    # Offline without a recorded cause: the client only says the file is not cached.
    return error if isinstance(error, LocalEntryNotFoundError) else None


def short(error: BaseException, limit: int = 160) -> str:
    """The error's message on one line, shortened."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def hub_endpoint() -> str:
    """The hub's address (``https://huggingface.co``, or ``HF_ENDPOINT``)."""
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT).rstrip("/")
    except ImportError:
        return "https://huggingface.co"


def hub_host() -> str:
    """The hub's host name, as messages show it."""
    endpoint = hub_endpoint()
    return urlsplit(endpoint).netloc or endpoint


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # an unreadable token file is as good as none here
        return False


def hub_refusal(repo: str, error: BaseException) -> CheckpointError | None:
    """The one-line error for the hub answering with a refusal (gated repository, unknown or
    private repository, any other error status) found in ``error``'s chain; None if there is
    none. The hub client raises its HTTP errors as they are, or (with ``force_download``) as the
    cause of a ValueError."""
    try:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
        )
    except ImportError:
        return None
    login = "authenticate with `hf auth login` or the HF_TOKEN environment variable"
    for current in _chain(error):
        if isinstance(current, GatedRepoError):
            state = (
                "the token in use has no access to it yet (a license request may still be pending)"
                if _has_token()
                else "no Hugging Face token is set on this machine"
            )
            return CheckpointError(
                f"{repo} is a gated model and {state}: accept its license on "
                f"{hub_endpoint()}/{repo} while logged in, then {login}"
            )
        if isinstance(current, RepositoryNotFoundError):
            return CheckpointError(
                f"{hub_host()} has no repository {repo} this machine may read (it does not "
                f"exist, or it is private or gated and needs a token): check the name, or {login}"
            )
        if isinstance(current, HfHubHTTPError):
            # The hub answered, with an error status (rate limit, outage, missing file).
            return CheckpointError(
                f"{hub_host()} refused to serve {repo}: {short(current)}; try again later"
            )
    return None
