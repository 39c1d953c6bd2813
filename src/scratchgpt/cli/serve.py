"""`scratchgpt serve`: an OpenAI-compatible HTTP API and a browser chat page for a checkpoint."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from scratchgpt.cli.args import (
    add_dtype_flag,
    add_quantize_flag,
    inference_dtype,
    port,
    positive_float,
    positive_int,
)


def register(subparsers: Any) -> None:
    from scratchgpt.data.instructions import STYLE_NAMES

    p = subparsers.add_parser(
        "serve",
        help="serve a checkpoint over an OpenAI-compatible HTTP API with a browser chat page",
        description=(
            "Serve /v1/models, /v1/completions, /v1/chat/completions (or /v1/classify for a "
            "classifier checkpoint), /health, and a chat page at /. Binds to 127.0.0.1 unless "
            "--host says otherwise. Needs: pip install 'scratchgpt[serve]'."
        ),
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        required=True,
        help="scratchgpt checkpoint or run folder, or a GPT-2 folder in Hugging Face layout",
    )
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=port, default=8000, help="default: 8000 (0: any free port)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require 'Authorization: Bearer KEY' on /v1/*, KEY read from this environment variable",
    )
    p.add_argument("--model-name", help="the model id clients use (default: the folder's name)")
    p.add_argument(
        "--prompt-style",
        choices=STYLE_NAMES,
        help="render chat messages in this style (default: the checkpoint's, else the model's chat template (chat), else none: a base model)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    add_dtype_flag(p)
    add_quantize_flag(p)
    p.add_argument(
        "--slots",
        type=positive_int,
        default=8,
        help="choices decoded at once by continuous batching (default 8); each slot holds a "
        "KV cache of the model's context length",
    )
    p.add_argument("--max-queue", type=positive_int, default=16, help="waiting requests before 503")
    p.add_argument(
        "--timeout", type=positive_float, default=120.0, help="seconds per request (default 120)"
    )
    p.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        default=30.0,
        help="on SIGTERM or Ctrl-C: seconds to let running requests finish before they are "
        "cancelled (default 30); the server stops accepting at once and exits 0",
    )
    p.add_argument(
        "--max-body-bytes", type=positive_int, default=1_000_000, help="larger bodies get 413"
    )
    p.add_argument(
        "--no-truncate-history",
        dest="truncate_history",
        action="store_false",
        help="refuse (400) a chat that does not fit the context instead of dropping its oldest "
        "turns (a request's truncate_history field still decides for itself)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scratchgpt.errors import ConfigError

    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError(
            "scratchgpt serve needs FastAPI and uvicorn: pip install 'scratchgpt[serve]'"
        ) from None
    from scratchgpt.serving.app import create_app
    from scratchgpt.serving.model import load_served_model

    if args.max_queue < 1:
        raise ConfigError(f"--max-queue must be at least 1, got {args.max_queue}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(
                f"--api-key-env {args.api_key_env}: that environment variable is not set or "
                "empty; export it with the key clients must send"
            )
    served = load_served_model(
        args.checkpoint,
        device=args.device,
        prompt_style=args.prompt_style,
        name=args.model_name,
        dtype=inference_dtype(args.dtype, args.device, args.quantize),
        quantize=args.quantize,
    )
    app = create_app(
        served,
        api_key=api_key,
        max_queue=args.max_queue,
        timeout=args.timeout,
        max_body_bytes=args.max_body_bytes,
        truncate_history=args.truncate_history,
        slots=args.slots,
        shutdown_grace=args.shutdown_timeout,
    )
    server = _server(app, served, args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(
            f"warning: listening on {args.host} without an API key: anyone who can reach this "
            "machine can use the model (see --api-key-env)",
            file=sys.stderr,
        )
    # uvicorn handles SIGTERM while it serves (graceful shutdown), then restores the handler it
    # found and raises the signal again: with this one, that (or a SIGTERM before serving) is a
    # clean exit with status 0 rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run()
    return 0


def _server(app: Any, served: Any, args: argparse.Namespace) -> Any:
    """The uvicorn server of ``app``: it logs one line per request, prints the URL once bound,
    and on SIGTERM/Ctrl-C lets the engine wind down first."""
    import uvicorn

    # One line per request on stderr (see scratchgpt.serving.engine).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    request_log = logging.getLogger("scratchgpt.serving")
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    # uvicorn handles SIGTERM/SIGINT: it stops accepting and waits for the replies in flight
    # (past this backstop it cancels their tasks, which would be logged as errors).
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=int(args.shutdown_timeout) + 10,
    )
    server = uvicorn.Server(config)

    # Print the URL once the socket is bound (so --port 0 shows the port actually chosen).
    startup = server.startup

    async def startup_and_announce(sockets: Any = None) -> None:
        await startup(sockets=sockets)
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                kind = "classifier" if served.kind == "classifier" else "model"
                print(
                    f"serving {kind} {served.name!r} at http://{shown}:{port}/ "
                    f"(API: http://{shown}:{port}/v1)",
                    flush=True,
                )
                return

    server.startup = startup_and_announce  # type: ignore[method-assign]

    # On SIGTERM/Ctrl-C the engine hears first: it refuses new requests and cancels those still
    # running after --shutdown-timeout (their streams end with an error event), so the
    # connections close by themselves and uvicorn, which waits for them, can exit.
    shutdown = server.shutdown

    async def shutdown_engine_first(sockets: Any = None) -> None:
        app.state.engine.shutdown(args.shutdown_timeout)
        await shutdown(sockets=sockets)

    server.shutdown = shutdown_engine_first  # type: ignore[method-assign]
    return server


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)
