"""A fuzz pass over the server's OpenAPI schema: bodies drawn from each endpoint's schema (and
bodies that break it) never get a 500, and every error is in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchgpt.serving import create_app, load_served_model
from test_serving import LiveServer, httpx, make_checkpoints

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy:
    """Values valid for a JSON schema (the subset FastAPI writes), kept small so that valid
    generation requests stay quick: integers near their minimum, short lists and strings."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].split("/")[-1]], components)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, components) for k, v in props.items() if k in required},
            optional={k: from_schema(v, components) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), components),
            min_size=schema.get("minItems", 0),
            max_size=max(schema.get("minItems", 0), 3),
        )
    if kind == "string":
        return st.text(max_size=12)
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -5) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 5) - 1)
        return st.integers(low, min(high, low + 3))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1.0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 3.0))
        return st.floats(low, high, exclude_min="exclusiveMinimum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    torch.set_num_threads(1)
    paths = make_checkpoints(tmp_path_factory.mktemp("fuzz"))
    lm = LiveServer(create_app(load_served_model(paths["instruct"]), timeout=20))
    clf = LiveServer(create_app(load_served_model(paths["clf"]), timeout=20))
    with lm, clf:
        yield lm, clf


_SPECS: dict[str, dict] = {}


def _endpoints(server: LiveServer) -> list[tuple[str, dict, dict]]:
    if server.url not in _SPECS:
        _SPECS[server.url] = httpx.get(server.url + "/openapi.json").json()
    spec = _SPECS[server.url]
    components = spec.get("components", {}).get("schemas", {})
    found = []
    for path, ops in spec["paths"].items():
        post = ops.get("post")
        if post and "requestBody" in post:
            schema = post["requestBody"]["content"]["application/json"]["schema"]
            found.append((path, schema, components))
    return found


def _check(server: LiveServer, path: str, body: Any) -> None:
    r = httpx.post(server.url + path, content=json.dumps(body), timeout=60,
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code < 500, (path, body, r.status_code, r.text)
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert err["type"] in ("invalid_request_error", "authentication_error")


def test_schema_lists_the_endpoints(servers):
    lm, clf = servers
    assert {p for p, _, _ in _endpoints(lm)} == {"/v1/completions", "/v1/chat/completions"}
    assert {p for p, _, _ in _endpoints(clf)} == {"/v1/classify"}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_no_server_errors(servers, data):
    server = data.draw(st.sampled_from(servers))
    path, schema, components = data.draw(st.sampled_from(_endpoints(server)))
    valid = from_schema(schema, components)
    # Schema-valid bodies, valid bodies with one field replaced by anything, and any JSON at all.
    ref = schema.get("$ref", "")
    fields = sorted(components.get(ref.split("/")[-1], {}).get("properties", {})) or ["x"]
    key = st.sampled_from(fields) | st.text(max_size=12)
    broken = st.tuples(valid, key, JSON).map(lambda t: {**t[0], t[1]: t[2]})
    body = data.draw(st.one_of(valid, broken, JSON))
    _check(server, path, body)
