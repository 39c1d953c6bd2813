"""Between HTTP and the engine: queue a job (503 when the queue is full), await its result (a
client that hangs up cancels it), or stream its pieces as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import StreamingResponse

from scratchgpt.errors import ScratchGPTError
from scratchgpt.serving.engine import (
    Engine,
    Job,
    JobCancelledError,
    JobFn,
    JobTimeoutError,
    QueueFullError,
)
from scratchgpt.serving.errors import APIError, error_body, queue_full_error, timeout_error

__all__ = ["ChunkFormat", "collect", "event_stream", "sse", "submit"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def submit(engine: Engine, fn: JobFn) -> Job:
    """Queue ``fn`` on ``engine``; a full queue is answered 503 with Retry-After."""
    try:
        return engine.submit(fn)
    except QueueFullError as e:
        raise queue_full_error(e, engine.retry_after()) from None


async def _cancel_on_disconnect(job: Job, request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)
    job.cancel()


async def collect(job: Job, request: Request, timeout: float) -> Any:
    """The job's result; cancels it if the client disconnects first. Errors become the
    API's: 504 past ``timeout`` seconds, 499 when cancelled."""
    watcher = asyncio.create_task(_cancel_on_disconnect(job, request))
    try:
        async for kind, value in job.events():
            if kind == "done":
                return value
            if kind == "error":
                if isinstance(value, JobTimeoutError):
                    raise timeout_error(timeout)
                if isinstance(value, JobCancelledError):
                    raise APIError(499, "request cancelled", code="cancelled")
                raise value
    except JobTimeoutError:
        raise timeout_error(timeout) from None
    finally:
        watcher.cancel()
        job.cancel()  # a no-op once finished; frees the slots if this task was cancelled
    raise APIError(500, "the generation ended without a result", "server_error")


class ChunkFormat(Protocol):
    """How a streamed response writes its chunks (completions and chat differ)."""

    def opening(self, index: int) -> dict[str, Any] | None:
        """The chunk sent for choice ``index`` before generation starts, if any."""

    def piece(self, index: int, text: str) -> dict[str, Any]:
        """A chunk with the next ``text`` of choice ``index``."""

    def final(self, choice: Any) -> dict[str, Any]:
        """The last chunk of a choice, with its finish reason."""

    def usage_chunk(self, completion_tokens: int) -> dict[str, Any] | None:
        """The usage chunk after all choices (None: the client did not ask for it)."""


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _stream_error(err: Exception, timeout: float) -> dict[str, Any]:
    if isinstance(err, JobTimeoutError):
        return timeout_error(timeout).body()
    if isinstance(err, ScratchGPTError):
        return error_body(str(err), "invalid_request_error")
    return error_body(f"generation failed: {err}", "server_error")


async def sse(job: Job, fmt: ChunkFormat, n_choices: int, timeout: float) -> AsyncIterator[str]:
    """Server-sent events of a streaming job, ending with ``data: [DONE]``; an error arrives
    as one error event; a disconnect cancels the job."""
    try:
        for i in range(n_choices):
            first = fmt.opening(i)
            if first is not None:
                yield _data(first)
        async for kind, value in job.events():
            if kind == "item":
                index, piece = value
                if piece is not None:
                    yield _data(fmt.piece(index, piece))
            elif kind == "done":
                for c in value:
                    yield _data(fmt.final(c))
                usage = fmt.usage_chunk(sum(c.completion_tokens for c in value))
                if usage is not None:
                    yield _data(usage)
            else:
                yield _data(_stream_error(value, timeout))
    except JobTimeoutError:
        yield _data(timeout_error(timeout).body())
    finally:
        job.cancel()  # a no-op once finished; stops the worker if the client left
    yield "data: [DONE]\n\n"


def event_stream(job: Job, fmt: ChunkFormat, n_choices: int, timeout: float) -> StreamingResponse:
    """The streaming HTTP response of ``job``."""
    return StreamingResponse(
        sse(job, fmt, n_choices, timeout), media_type="text/event-stream", headers=SSE_HEADERS
    )
