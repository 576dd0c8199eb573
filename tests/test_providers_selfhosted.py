"""Azure OpenAI, TEI and Ollama through the gateway, with the openai SDK, to their fakes.

Each: vectors in input order for a request larger than the provider's per-call limit,
dimensions, every encoding, usage (counted by the upstream, or estimated and said so),
and each upstream error mapped. Plus ``input_type`` reaching TEI as its ``prompt_name``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from fakes.azure_upstream import AzureUpstream
from fakes.ollama_upstream import OllamaUpstream
from fakes.tei_upstream import TEIUpstream
from fakes.vectors import fake_matrix, fake_token_count
from providers.catalog import CATALOG_DATE, MODELS, list_price
from upstream_support import ENCODINGS, OAI_KEY, Stack, check_vectors, error_of, upstream_stack

AZURE_KEY = "azure-SECRET-0f1e2d3c4b5a69788796"
TEI_KEY = "tei-SECRET-a1b2c3d4e5f60718"
TEXTS = [f"text number {i} about {'x' * (i % 7)}" for i in range(40)]


def _models(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
    quiet = {"breaker_failures": 0}
    return {
        # A deployment's max_inputs (here the fake's own limit) caps its calls, not the request.
        "az": {"deployments": [{
            "provider": "azure", "base_url": extra["azure"], "api_key": AZURE_KEY,
            "deployment": "emb-small", "model": "text-embedding-3-small",
            "max_inputs": 16, "price_per_million_tokens": 0.02, **quiet,
        }]},
        "az-badkey": {
            "provider": "azure", "base_url": extra["azure"], "api_key": "wrong",
            "deployment": "emb-small", "model": "text-embedding-3-small", **quiet,
        },
        "az-nodeploy": {
            "provider": "azure", "base_url": extra["azure"], "api_key": AZURE_KEY,
            "deployment": "missing", **quiet,
        },
        "tei": {
            "provider": "tei", "base_url": extra["tei"], "api_key": TEI_KEY, "model": "e5-small",
            "query_prompt_name": "query", "document_prompt_name": "passage",
            "matryoshka": True, "price_per_million_tokens": 0.5, **quiet,
        },
        "tei-doc": {
            "provider": "tei", "base_url": extra["tei"], "api_key": TEI_KEY, "model": "e5-small",
            "query_prompt_name": "query", "document_prompt_name": "passage",
            "default_input_type": "document", **quiet,
        },
        "tei-plain": {
            "provider": "tei", "base_url": extra["tei-nocount"], "model": "e5-small", **quiet,
        },
        "ollama": {
            "provider": "ollama", "base_url": extra["ollama"], "model": "nomic-embed-text",
            "max_inputs_per_call": 8, "native_dimensions": True, "keep_alive": "10m", **quiet,
        },
        "ollama-missing": {"provider": "ollama", "base_url": extra["ollama"], "model": "not-pulled", **quiet},
        # Cost from the catalog's list price, from the config's, or none for an unlisted model.
        "oai-listed": {"provider": "openai", "base_url": f"{oai}/v1", "api_key": OAI_KEY, "model": "text-embedding-3-small"},
        "oai-override": {
            "provider": "openai", "base_url": f"{oai}/v1", "api_key": OAI_KEY, "model": "text-embedding-3-small",
            "price_per_million_tokens": 1.0,
        },
        "oai-unlisted": {"provider": "openai", "base_url": f"{oai}/v1", "api_key": OAI_KEY, "model": "fake-minilm"},
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    extra = {
        "azure": AzureUpstream(deployments={"emb-small": "text-embedding-3-small"}, api_key=AZURE_KEY, max_inputs=16),
        "tei": TEIUpstream(api_key=TEI_KEY),
        "tei-nocount": TEIUpstream(send_tokens=False),
        "ollama": OllamaUpstream(),
    }
    with upstream_stack(_models, extra_upstreams=extra) as running:
        yield running


@pytest.fixture
def gw(stack: Stack) -> Stack:
    stack.reset()
    return stack


def _embed(gw: Stack, alias: str, value: Any, **fields: Any) -> httpx.Response:
    with gw.http() as http:
        return http.post("/v1/embeddings", json={"model": alias, "input": value, **fields})


# -- input order across calls, dimensions, encodings ---------------------------------------


@pytest.mark.parametrize(
    ("alias", "server", "width", "calls"),
    [("az", "azure", 1536, 3), ("tei", "tei", 384, 2), ("ollama", "ollama", 768, 5)],
)
def test_input_order_over_several_calls(gw: Stack, alias: str, server: str, width: int, calls: int) -> None:
    with gw.sdk() as sdk:
        answer = sdk.embeddings.create(model=alias, input=TEXTS)
    got = np.asarray([item.embedding for item in answer.data], dtype=np.float32)
    np.testing.assert_allclose(got, fake_matrix(TEXTS, width), atol=2e-6)
    assert [item.index for item in answer.data] == list(range(len(TEXTS)))
    assert gw.extra[server].app.log.count == calls


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("alias", "width"), [("az", 1536), ("tei", 384), ("ollama", 768)])
def test_every_encoding(gw: Stack, alias: str, width: int, encoding: str) -> None:
    response = _embed(gw, alias, TEXTS[:3], encoding_format=encoding)
    assert response.status_code == 200, response.text
    data = [item["embedding"] for item in response.json()["data"]]
    check_vectors(encoding, data, fake_matrix(TEXTS[:3], width), exact=True)


@pytest.mark.parametrize(("alias", "server", "native"), [("az", "azure", True), ("ollama", "ollama", True), ("tei", "tei", False)])
def test_dimensions(gw: Stack, alias: str, server: str, native: bool) -> None:
    with gw.sdk() as sdk:
        answer = sdk.embeddings.create(model=alias, input=TEXTS[:2], dimensions=64)
    got = np.asarray([item.embedding for item in answer.data], dtype=np.float32)
    np.testing.assert_allclose(got, fake_matrix(TEXTS[:2], 64), atol=2e-6)
    sent = gw.extra[server].app.log.last.json
    assert (sent.get("dimensions") == 64) is native


# -- what each upstream receives -----------------------------------------------------------


def test_azure_request_shape(gw: Stack) -> None:
    assert _embed(gw, "az", "hello", user="u-1").status_code == 200
    request = gw.extra["azure"].app.log.last
    assert request.path == "/openai/deployments/emb-small/embeddings"
    assert request.query == "api-version=2024-10-21"
    assert request.header("api-key") == AZURE_KEY and request.header("authorization") is None
    assert "model" not in request.json and request.json["user"] == "u-1"


def test_ollama_request_shape(gw: Stack) -> None:
    assert _embed(gw, "ollama", ["a", "b"]).status_code == 200
    sent = gw.extra["ollama"].app.log.last
    assert sent.json == {"model": "nomic-embed-text", "input": ["a", "b"], "truncate": True, "keep_alive": "10m"}
    assert sent.header("authorization") is None


def test_tei_request_shape_and_input_type(gw: Stack) -> None:
    text = "what is the capital of france"
    plain = _embed(gw, "tei", text).json()["data"][0]["embedding"]
    query = _embed(gw, "tei", text, input_type="query").json()["data"][0]["embedding"]
    sent = gw.extra["tei"].app.log.last
    assert sent.json == {"inputs": [text], "truncate": False, "normalize": True, "prompt_name": "query"}
    assert sent.header("authorization") == f"Bearer {TEI_KEY}"
    document = _embed(gw, "tei", text, input_type="document").json()["data"][0]["embedding"]
    assert gw.extra["tei"].app.log.last.json["prompt_name"] == "passage"
    np.testing.assert_allclose(plain, fake_matrix([text], 384)[0], atol=2e-6)
    np.testing.assert_allclose(query, fake_matrix(["query: " + text], 384)[0], atol=2e-6)
    np.testing.assert_allclose(document, fake_matrix(["passage: " + text], 384)[0], atol=2e-6)
    assert not np.allclose(query, document)
    # The deployment's default applies when the request sends none (and null is none).
    _embed(gw, "tei-doc", text, input_type=None)
    assert gw.extra["tei"].app.log.last.json["prompt_name"] == "passage"
    _embed(gw, "tei-doc", text, input_type="query")
    assert gw.extra["tei"].app.log.last.json["prompt_name"] == "query"


# -- usage and cost ------------------------------------------------------------------------


def test_usage_counted_by_the_upstream_and_priced(gw: Stack) -> None:
    texts = TEXTS[:5]
    tokens = sum(fake_token_count(t) for t in texts)
    for alias, price in (("az", 0.02), ("tei", 0.5)):
        response = _embed(gw, alias, texts)
        usage = response.json()["usage"]
        assert usage["prompt_tokens"] == tokens, alias
        assert usage["cost"]["total_cost"] == pytest.approx(tokens * price / 1e6)
        assert "x-gateway-usage-estimated" not in response.headers
    ollama = _embed(gw, "ollama", texts)
    assert ollama.json()["usage"]["prompt_tokens"] == tokens
    assert "cost" not in ollama.json()["usage"]  # a local model: no price, no guess


def test_cost_from_the_catalog_unless_configured(gw: Stack) -> None:
    texts = TEXTS[:4]
    tokens = sum(fake_token_count(t) for t in texts)
    listed = _embed(gw, "oai-listed", texts).json()["usage"]
    assert list_price("openai", "text-embedding-3-small") == 0.02
    assert listed["cost"]["total_cost"] == pytest.approx(tokens * 0.02 / 1e6)
    override = _embed(gw, "oai-override", texts).json()["usage"]
    assert override["cost"]["total_cost"] == pytest.approx(tokens * 1.0 / 1e6)
    assert "cost" not in _embed(gw, "oai-unlisted", texts).json()["usage"]
    # Azure's price is per agreement: the catalog gives it none.
    assert list_price("azure", "text-embedding-3-small") is None


def test_catalog_is_dated_and_consistent() -> None:
    assert CATALOG_DATE
    assert len({(m.provider, m.model) for m in MODELS}) == len(MODELS)
    for model in MODELS:
        assert model.dimensions > 0 and model.max_input_tokens > 0
        assert model.price_per_million_tokens is None or 0 < model.price_per_million_tokens < 1
        if model.native_dimensions is not None:
            assert model.native_dimensions[1] >= model.dimensions or model.provider == "voyage"


def test_usage_estimated_when_the_upstream_does_not_count(gw: Stack) -> None:
    response = _embed(gw, "tei-plain", ["abcdef", "gh"])
    assert response.status_code == 200
    assert response.headers["x-gateway-usage-estimated"] == "true"
    assert response.json()["usage"]["prompt_tokens"] == 2 + 1


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "server", "status", "body", "expected"),
    [
        ("az", "azure", 401, None, 502),
        ("az", "azure", 500, None, 502),
        ("az", "azure", 503, None, 503),
        ("tei", "tei", 413, {"error": "batch size too large", "error_type": "validation"}, 400),
        ("tei", "tei", 424, {"error": "model failed", "error_type": "backend"}, 502),
        ("tei", "tei", 503, {"error": "unhealthy", "error_type": "unhealthy"}, 503),
        ("ollama", "ollama", 500, {"error": "llama runner process has terminated"}, 502),
        ("ollama", "ollama", 400, {"error": "invalid options"}, 400),
    ],
)
def test_upstream_errors_mapped(
    gw: Stack, alias: str, server: str, status: int, body: Any, expected: int
) -> None:
    gw.extra[server].app.faults.add("status", status=status, body=body)
    response = _embed(gw, alias, "x")
    assert response.status_code == expected, response.text
    error = error_of(response)
    assert AZURE_KEY not in response.text and TEI_KEY not in response.text
    if status == 400:
        assert "invalid options" in error["message"]


@pytest.mark.parametrize(("alias", "server"), [("az", "azure"), ("tei", "tei"), ("ollama", "ollama")])
def test_rate_limit_keeps_retry_after(gw: Stack, alias: str, server: str) -> None:
    gw.extra[server].app.faults.add("status", status=429, retry_after="4", body={"error": "overloaded"})
    response = _embed(gw, alias, "x")
    assert response.status_code == 429 and response.headers["retry-after"] == "4"


@pytest.mark.parametrize(("alias", "server"), [("az", "azure"), ("tei", "tei"), ("ollama", "ollama")])
def test_malformed_answers_are_502(gw: Stack, alias: str, server: str) -> None:
    gw.extra[server].app.faults.add("wrong_dims")
    assert _embed(gw, alias, ["a", "b"]).status_code == 502
    gw.extra[server].app.faults.add("invalid_json")
    assert _embed(gw, alias, ["a", "b"]).status_code == 502


def test_real_refusals(gw: Stack) -> None:
    assert _embed(gw, "az-badkey", "x").status_code == 502  # our key is wrong: not the client's fault
    assert _embed(gw, "az-nodeploy", "x").status_code == 502  # misconfigured deployment: 404 upstream
    assert _embed(gw, "ollama-missing", "x").status_code == 502  # model not pulled
    assert "not found" in error_of(_embed(gw, "ollama-missing", "x"))["message"]


def test_models_say_which_aliases_honour_input_type(gw: Stack) -> None:
    with gw.http() as http:
        listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert listed["tei"]["input_types"] == ["query", "document"]
    assert listed["az"]["input_types"] == [] and listed["ollama"]["input_types"] == []
    assert listed["tei-plain"]["input_types"] == []
