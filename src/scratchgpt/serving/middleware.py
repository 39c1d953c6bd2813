"""The body-size limit: a plain ASGI middleware, as it must act before the body is parsed."""

from __future__ import annotations

import json
from typing import Any

from scratchgpt.serving.errors import error_body

__all__ = ["DEFAULT_MAX_BODY", "BodyLimitMiddleware"]

DEFAULT_MAX_BODY = 1_000_000  # bytes: far more than any prompt that fits a GPT-2 context


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        data = json.dumps(
            error_body(
                f"request body is larger than the server's limit of {self.limit} bytes; send a "
                "shorter prompt (or start the server with a larger --max-body-bytes)",
                "invalid_request_error",
                code="request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
