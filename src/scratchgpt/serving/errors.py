"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP
status, for the API's own errors, invalid bodies, unknown paths, bad input and server faults."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scratchgpt.errors import ScratchGPTError

__all__ = [
    "APIError",
    "error_body",
    "error_response",
    "install_error_handlers",
    "queue_full_error",
    "timeout_error",
]

log = logging.getLogger("scratchgpt.serving")

_STATUS_TYPES = {
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}
_FASTAPI_BODY_ERROR = "There was an error parsing the body"  # a body FastAPI cannot decode
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        """The error object (the ``param`` left out, as inside a stream)."""
        return error_body(self.message, self.type, code=self.code)


def error_body(message: str, type: str, param: str | None = None, code: Any = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(e: APIError) -> JSONResponse:
    """The JSON response of an :class:`APIError`."""
    return JSONResponse(
        error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=e.headers
    )


def timeout_error(seconds: float) -> APIError:
    """A request ran past the server's time limit."""
    return APIError(
        504,
        f"the request took longer than the server's limit of {seconds:g} s; ask for "
        "fewer tokens (max_tokens)",
        "timeout",
        code="timeout",
    )


def queue_full_error(reason: Any, retry_after: int) -> APIError:
    """The queue is full: 503 with a Retry-After header."""
    return APIError(
        503,
        f"the server is busy ({reason}); retry in {retry_after} s",
        "server_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after)},
    )


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _UNION_TAGS)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, param) for a body that does not match its schema: the first problem."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = list(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    # Pydantic adds the member type of a union to the location ("prompt.str"): keep the field.
    param = ".".join(str(x) for x in loc if not _is_union_tag(x)) or None
    if first.get("type") == "json_invalid":
        return (
            f"the request body is not valid JSON ({first.get('msg')}); send a JSON object",
            None,
        )
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"field {param!r}: " if param else ""
    return f"{where}{first.get('msg', 'invalid value')}{more}", param


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, param = validation_message(exc)
    return JSONResponse(error_body(message, "invalid_request_error", param), 400)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 400 and message == _FASTAPI_BODY_ERROR:
        message = "the request body is not valid JSON (or not UTF-8 text); send a JSON object"
    etype = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
    return JSONResponse(error_body(message, etype), exc.status_code, headers=exc.headers)


async def _bad_input(request: Request, exc: ScratchGPTError) -> JSONResponse:
    return JSONResponse(error_body(str(exc), "invalid_request_error"), 400)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body(f"internal error: {exc}", "server_error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape: the API's own (their status), invalid
    bodies (400), unknown paths and methods, bad input to the model (400), anything else (500)."""
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ScratchGPTError, _bad_input)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)
