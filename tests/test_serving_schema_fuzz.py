"""Schemathesis against the server's own ``/openapi.json``, in-process (ASGI): a bounded,
derandomized set of schema-valid and schema-breaking requests to every operation, with and
without an API key configured, never gets a 5xx, and every error is in OpenAI's shape. Also: the
document declares the bearer-key security scheme on the routes that check the key, and the error
responses as they are answered; the fuzzer checks statuses, content types and bodies against it."""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

from scratchgpt.serving import create_app, load_served_model  # noqa: E402
from test_serving import make_checkpoints  # noqa: E402

KEY = "s3cret"
CONTEXT = 40  # tokens: room for the alpaca template and a few tokens of reply
# The largest valid request (8 choices of 16 prompts) takes seconds, but many times that on a
# machine busy with other tests: the time limit (504) must not be what this test measures.
TIMEOUT = 600
MAX_EXAMPLES = 10  # per operation and mode: about 100 requests per app, seconds each
KEY_EXAMPLES = 5
AUTHED = {"/v1/models", "/v1/models/{model_id}", "/v1/completions", "/v1/chat/completions",
          "/v1/classify"}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(1)
    # A short window keeps schema-valid requests (up to 8 choices of 16 prompts) quick.
    paths = make_checkpoints(tmp_path_factory.mktemp("schema_fuzz"), context=CONTEXT)
    return {name: load_served_model(path) for name, path in paths.items()}


def _schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _check_response(case, response, api_key: str | None, sent_key: bool) -> None:
    where = f"{case.method} {case.formatted_path} body={case.body!r} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if response.status_code >= 400:
        err = response.json()["error"]
        assert isinstance(err["message"], str) and err["message"], where
        assert err["type"] in ("invalid_request_error", "authentication_error"), where
    if api_key is not None and not sent_key and case.path in AUTHED:
        # The key is checked once the body is parsed: a body that is not JSON is told so first.
        malformed = (
            response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
        )
        assert response.status_code == 401 or malformed, where


def _warming_up(case, response) -> bool:
    """GET /health answers 503 "loading" until the engine has warmed the model up (readiness,
    as documented). Each in-process call starts the app anew, so on a busy machine a call can
    come before the warm-up ends: that answer is right, not a server error."""
    return (
        case.path == "/health"
        and response.status_code == 503
        and response.json().get("status") == "loading"
    )


def _fuzz(app, *, api_key: str | None, send_key: bool, examples: int = MAX_EXAMPLES) -> int:
    """Run every operation of ``app``'s schema; returns how many requests were made."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key and send_key else None
    calls = 0
    # Statuses and bodies as documented; with a key, also that a request without it is refused.
    checks = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_schema_conformance,
    ]
    if headers is not None:
        checks.append(st_checks.ignored_auth)
    for result in _schema(app).get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal calls
                calls += 1
                response = case.call(headers=headers)
                if _warming_up(case, response):
                    return
                _check_response(case, response, api_key, sent_key=headers is not None)
                case.validate_response(response, checks=checks, headers=headers)

            # Nothing in some operations can break their schema (GET /health): Unsatisfiable.
            with contextlib.suppress(Unsatisfiable):
                run()
    return calls


def test_openapi_declares_the_bearer_key_scheme(served):
    app = create_app(served["instruct"])
    spec = _schema(app).raw_schema
    schemes = spec["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "--api-key-env" in scheme["description"]
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert (op.get("security") == [{name: []}]) == (path in AUTHED), path
    assert {p for p in spec["paths"] if p.startswith("/v1/c")} == {
        "/v1/completions",
        "/v1/chat/completions",
    }
    # Errors are documented as they are answered: OpenAI's error object, 400 for a bad body.
    for path in ("/v1/completions", "/v1/chat/completions"):
        responses = spec["paths"][path]["post"]["responses"]
        assert "422" not in responses and {"400", "401", "503", "504"} <= set(responses)
        ref = responses["400"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
        assert "text/event-stream" in responses["200"]["content"]
    clf = _schema(create_app(served["clf"])).raw_schema
    assert {p for p in clf["paths"] if p.startswith("/v1/c")} == {"/v1/classify"}


@pytest.mark.parametrize("model", ["instruct", "clf"])
def test_fuzz_without_a_key(served, model):
    app = create_app(served[model], timeout=TIMEOUT)
    assert _fuzz(app, api_key=None, send_key=False) > 4 * MAX_EXAMPLES


@pytest.mark.parametrize("model", ["instruct", "clf"])
@pytest.mark.parametrize("send_key", [True, False], ids=["key", "no-key"])
def test_fuzz_with_a_key(served, model, send_key):
    app = create_app(served[model], api_key=KEY, timeout=TIMEOUT)
    # What follows a valid key is the run above: a few cases show that the key changes nothing
    # else, and that without it every request is refused alike.
    assert _fuzz(app, api_key=KEY, send_key=send_key, examples=KEY_EXAMPLES) > 4 * KEY_EXAMPLES
