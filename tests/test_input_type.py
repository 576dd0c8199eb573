"""``input_type``: the request field, the deployment default, local prefixes, config checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import make_config
from fakes.server import run_in_thread
from gateway.app import create_app
from gateway.config import ConfigError, parse_config

LOCAL = {"provider": "onnx", "model": "all-MiniLM-L6-v2"}
PREFIXED = {**LOCAL, "query_prefix": "query: ", "document_prefix": "passage: "}
MODELS: dict[str, Any] = {
    "plain": LOCAL,
    "e5ish": PREFIXED,
    "e5ish-doc": {**PREFIXED, "default_input_type": "document"},
}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with run_in_thread(create_app(make_config(MODELS)), lifespan="on", startup_timeout=60) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            yield client


def _embed(http: httpx.Client, model: str, text: str, **fields: Any) -> tuple[np.ndarray, int]:
    response = http.post("/v1/embeddings", json={"model": model, "input": [text], **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return np.asarray(body["data"][0]["embedding"]), body["usage"]["prompt_tokens"]


def test_local_prefixes_are_prepended_and_counted(http: httpx.Client) -> None:
    text = "how do rivers form"
    query, query_tokens = _embed(http, "e5ish", text, input_type="query")
    document, document_tokens = _embed(http, "e5ish", text, input_type="document")
    bare, bare_tokens = _embed(http, "e5ish", text)
    expected_query, expected_query_tokens = _embed(http, "plain", "query: " + text)
    expected_document, _ = _embed(http, "plain", "passage: " + text)
    plain, plain_tokens = _embed(http, "plain", text)
    np.testing.assert_allclose(query, expected_query, atol=1e-5)
    np.testing.assert_allclose(document, expected_document, atol=1e-5)
    np.testing.assert_allclose(bare, plain, atol=1e-5)  # no input_type, no default: no prefix
    assert float(query @ document) < 0.999
    assert query_tokens == expected_query_tokens > plain_tokens == bare_tokens
    assert document_tokens > plain_tokens


def test_deployment_default_applies_when_absent(http: httpx.Client) -> None:
    text = "a passage about rivers"
    default, _ = _embed(http, "e5ish-doc", text, input_type=None)
    document, _ = _embed(http, "e5ish", text, input_type="document")
    query, _ = _embed(http, "e5ish-doc", text, input_type="query")
    np.testing.assert_allclose(default, document, atol=1e-5)
    assert not np.allclose(default, query, atol=1e-3)


def test_a_model_without_prefixes_ignores_input_type(http: httpx.Client) -> None:
    plain, _ = _embed(http, "plain", "rivers")
    as_query, _ = _embed(http, "plain", "rivers", input_type="query")
    np.testing.assert_allclose(plain, as_query, atol=1e-6)
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["plain"]["input_types"] == []
    assert models["e5ish"]["input_types"] == ["query", "document"]


@pytest.mark.parametrize("value", ["search_query", "QUERY", 1, ["query"], True])
@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/contextualizedembeddings"])
def test_anything_else_is_a_400_naming_the_field(http: httpx.Client, route: str, value: Any) -> None:
    inputs: Any = ["x"] if route == "/v1/embeddings" else [["x"]]
    response = http.post(route, json={"model": "e5ish", "input": inputs, "input_type": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input_type"
    assert "query, document" in error["message"]


def _errors(models: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": models, "usage": {"ledger": "off"}}, {})
    return caught.value.errors


def test_a_group_must_agree_on_input_type() -> None:
    deployments = [
        {"name": "prefixed", **PREFIXED, "space": "s"},
        {"name": "bare", **LOCAL, "space": "s"},
    ]
    [error] = _errors({"m": {"deployments": deployments}})
    assert error.startswith("models.m: alias 'm' treats input_type differently")
    assert "prefixed (honours input_type" in error and "bare (ignores input_type)" in error
    defaults = [
        {"name": "q", **PREFIXED, "default_input_type": "query"},
        {"name": "d", **PREFIXED, "default_input_type": "document"},
    ]
    [error] = _errors({"m": {"deployments": defaults}})
    assert "q (honours input_type, default query)" in error and "d (honours input_type, default document)" in error
    allowed = parse_config({"models": {"m": {"deployments": deployments, "allow_mixed_spaces": True}}}, {})
    assert len(allowed.models["m"].deployments) == 2
    same = parse_config({"models": {"m": {"deployments": [
        {"name": "a", **PREFIXED}, {"name": "b", **PREFIXED, "query_prefix": "q: "},
    ]}}}, {})
    assert [d.honours_input_type for d in same.models["m"].deployments] == [True, True]


def test_default_input_type_is_checked() -> None:
    [error] = _errors({"m": {**LOCAL, "default_input_type": "query"}})
    assert error.startswith("models.m.default_input_type: has no effect")
    [error] = _errors({"m": {**PREFIXED, "default_input_type": "passage"}})
    assert error.startswith("models.m.default_input_type: must be one of query, document")
    [error] = _errors({"m": {"provider": "openai", "model": "text-embedding-3-small", "default_input_type": "query"}})
    assert "provider 'openai' ignores input_type" in error
