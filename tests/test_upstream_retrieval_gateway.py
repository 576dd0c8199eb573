"""Through the gateway to fake Cohere, Voyage, Gemini and Jina upstreams, with the openai SDK.

Per provider: every encoding with and without ``dimensions`` (what each asks its upstream
for), usage and cost, vectors in input order for a request larger than the provider's
per-call limit, and ``input_type`` reaching the upstream as its own field (a query and a
document embedding differ, each the one the fake computes for that task).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, cast

import httpx
import numpy as np
import openai
import pytest

from fakes.vectors import fake_token_count
from fakes.vectors import typed_matrix
from retrieval_support import CASES, KEYS, PRICE, alias, retrieval_stack
from upstream_support import ENCODINGS, Stack, check_vectors, cosine

TEXTS = ["how do magnets work", "the fridge door holds a magnet", "gamma"]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    def more(extra: dict[str, str]) -> dict[str, Any]:
        return {
            "cohere-queries": alias("cohere", extra["cohere"], default_input_type="query"),
            # No task types on this older model: it ignores input_type, and says so.
            "gemini-legacy": alias("gemini", extra["gemini"], model="embedding-001"),
            # The same upstreams asked for JSON numbers instead of base64.
            "voyage-json": alias("voyage", extra["voyage"], encoding="float"),
            "jina-json": alias("jina", extra["jina"], encoding="float"),
        }

    with retrieval_stack(more) as running:
        yield running


def _embed(sdk: openai.OpenAI, http: httpx.Client, body: dict[str, Any]) -> tuple[list[Any], dict[str, Any], httpx.Headers]:
    encoding = body.get("encoding_format", "float")
    if encoding in ("float", "base64"):
        extra = {k: v for k, v in body.items() if k not in ("model", "input", "encoding_format", "dimensions")}
        raw = sdk.embeddings.with_raw_response.create(
            model=body["model"], input=body["input"], encoding_format=cast(Literal["float", "base64"], encoding),
            **({"dimensions": body["dimensions"]} if "dimensions" in body else {}), extra_body=extra or None,
        )
        parsed = raw.parse()
        assert [d.index for d in parsed.data] == list(range(len(parsed.data)))
        return [d.embedding for d in parsed.data], parsed.usage.model_dump(), httpx.Headers(dict(raw.headers))
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    return [d["embedding"] for d in payload["data"]], payload["usage"], response.headers


@pytest.mark.parametrize("sized", [False, True], ids=["full", "matryoshka"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("provider", list(CASES))
def test_every_encoding_and_dimensions(gw: Stack, sdk: openai.OpenAI, http: httpx.Client,
                                       provider: str, encoding: str, sized: bool) -> None:
    case = CASES[provider]
    dims = case.smaller if sized else None
    body: dict[str, Any] = {"model": provider, "input": TEXTS, "encoding_format": encoding, "input_type": "query"}
    if dims:
        body["dimensions"] = dims
    embeddings, usage, headers = _embed(sdk, http, body)

    check_vectors(encoding, embeddings, case.expected(TEXTS, dims, case.query), exact=True)
    (sent,) = case.calls(gw)
    assert case.texts(sent.json) == TEXTS and case.task(sent.json) == case.query
    if case.exact_usage:
        tokens = sum(fake_token_count(t) for t in TEXTS)
        assert usage["prompt_tokens"] == usage["total_tokens"] == tokens
        assert headers.get("x-gateway-usage-estimated") is None
    else:  # Gemini reports no usage: estimated, and said so
        tokens = usage["prompt_tokens"]
        assert tokens >= len(TEXTS) and headers["x-gateway-usage-estimated"] == "true"
    assert usage["cost"]["total_cost"] == pytest.approx(tokens * PRICE / 1e6)
    assert headers["x-gateway-provider"] == provider
    _check_what_was_asked(provider, sent.json, encoding, dims)


def _check_what_was_asked(provider: str, sent: dict[str, Any], encoding: str, dims: int | None) -> None:
    """Binary is asked of the upstream natively (MSB-first ``ubinary``, re-packed); int8
    never (the providers' int8 is not the gateway's); sizes the upstream lacks come from
    the next size up."""
    if provider == "cohere":
        assert sent["embedding_types"] == (["ubinary"] if encoding == "base64_binary" else ["float"])
        assert sent.get("output_dimension") == (512 if dims else None)
    elif provider == "voyage":
        assert sent.get("output_dtype") == ("ubinary" if encoding == "base64_binary" else None)
        assert sent.get("output_dimension") == (512 if dims else None) and sent["encoding_format"] == "base64"
    elif provider == "jina":
        assert sent["embedding_type"] == ("ubinary" if encoding == "base64_binary" else "base64")
        assert sent.get("dimensions") == dims and sent["normalized"] is True
    else:
        assert {r.get("outputDimensionality") for r in sent["requests"]} == {dims}


@pytest.mark.parametrize("sized", [False, True], ids=["full", "matryoshka"])
@pytest.mark.parametrize("encoding", ["float", "base64_binary"])
@pytest.mark.parametrize("provider", ["voyage", "jina"])
def test_base64_answers_decode_to_the_same_vectors_as_json_numbers(
        gw: Stack, http: httpx.Client, provider: str, encoding: str, sized: bool) -> None:
    case = CASES[provider]
    body: dict[str, Any] = {"input": TEXTS, "encoding_format": encoding, "input_type": "document"}
    if sized:
        body["dimensions"] = case.smaller
    got = {}
    for name in (provider, f"{provider}-json"):
        response = http.post("/v1/embeddings", json={**body, "model": name})
        assert response.status_code == 200, response.text
        got[name] = [d["embedding"] for d in response.json()["data"]]
    assert got[provider] == got[f"{provider}-json"]
    check_vectors(encoding, got[provider], case.expected(TEXTS, case.smaller if sized else None, case.document),
                  exact=True)
    as_base64, as_json = case.calls(gw)
    if provider == "voyage":
        assert as_base64.json["encoding_format"] == "base64" and "encoding_format" not in as_json.json
    else:
        floats = "base64" if encoding == "float" else "ubinary"
        assert (as_base64.json["embedding_type"], as_json.json["embedding_type"]) == (
            floats, "float" if encoding == "float" else "ubinary")


@pytest.mark.parametrize("provider", list(CASES))
def test_input_type_reaches_the_upstream_as_its_own_field(gw: Stack, http: httpx.Client, provider: str) -> None:
    case = CASES[provider]
    got: dict[str | None, np.ndarray] = {}
    for input_type in ("query", "document", None):
        body: dict[str, Any] = {"model": provider, "input": TEXTS[:2]}
        if input_type:
            body["input_type"] = input_type
        response = http.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        got[input_type] = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    query, document, default = case.calls(gw)
    assert case.task(query.json) == case.query and case.task(document.json) == case.document
    assert case.task(default.json) == case.default
    np.testing.assert_allclose(got["query"], case.expected(TEXTS[:2], None, case.query), atol=2e-6)
    np.testing.assert_allclose(got["document"], case.expected(TEXTS[:2], None, case.document), atol=2e-6)
    np.testing.assert_allclose(got[None], case.expected(TEXTS[:2], None, case.default), atol=2e-6)
    assert cosine(got["query"][0], got["document"][0]) < 0.9


@pytest.mark.parametrize("provider", list(CASES))
def test_more_inputs_than_one_call_takes_come_back_in_order(gw: Stack, sdk: openai.OpenAI, provider: str) -> None:
    case = CASES[provider]
    texts = [f"text number {i}" for i in range(case.per_call + 7)]
    result = sdk.embeddings.create(model=provider, input=texts, dimensions=case.smaller,
                                   extra_body={"input_type": "document"})
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, case.expected(texts, case.smaller, case.document), atol=2e-6)
    calls = case.calls(gw)
    assert len(calls) >= 2 and all(len(case.texts(c.json)) <= case.per_call for c in calls)
    assert [t for c in calls for t in case.texts(c.json)] == texts or sorted(
        t for c in calls for t in case.texts(c.json)) == sorted(texts)


@pytest.mark.parametrize("provider", list(CASES))
def test_the_key_travels_as_the_provider_wants(gw: Stack, http: httpx.Client, provider: str) -> None:
    assert http.post("/v1/embeddings", json={"model": provider, "input": "x"}).status_code == 200
    (sent,) = CASES[provider].calls(gw)
    if provider == "gemini":
        assert sent.header("x-goog-api-key") == KEYS["gemini"] and sent.header("authorization") is None
    else:
        assert sent.header("authorization") == f"Bearer {KEYS[provider]}"


def test_models_list_says_which_aliases_honour_input_type(gw: Stack, http: httpx.Client) -> None:
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    for provider, case in CASES.items():
        assert listed[provider]["dimensions"] == case.width
        assert listed[provider]["input_types"] == ["query", "document"]
    assert listed["gemini-legacy"]["input_types"] == []


def test_a_deployments_default_input_type_applies_when_the_request_gives_none(gw: Stack, http: httpx.Client) -> None:
    for body in ({}, {"input_type": "document"}):
        response = http.post("/v1/embeddings", json={"model": "cohere-queries", "input": ["x y"], **body})
        assert response.status_code == 200, response.text
    asked, told = (r.json["input_type"] for r in CASES["cohere"].calls(gw))
    assert (asked, told) == ("search_query", "search_document")


def test_a_model_without_task_types_gets_none(gw: Stack, http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "gemini-legacy", "input": ["x y"], "input_type": "query"})
    assert response.status_code == 200, response.text
    (sent,) = gw.extra["gemini"].app.log.for_path("/v1beta/models/embedding-001:batchEmbedContents")
    assert "taskType" not in sent.json["requests"][0]
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], typed_matrix(["x y"], 768, None)[0], atol=2e-6)


def test_extra_body_reaches_each_provider_in_its_place(gw: Stack, http: httpx.Client) -> None:
    # Gemini's keys belong to every request of the batch; Cohere's own input_type values
    # (clustering, ...) pass when the gateway's input_type is absent.
    response = http.post("/v1/embeddings", json={"model": "gemini", "input": ["a b", "c"], "input_type": "document",
                                                 "extra_body": {"title": "Magnets"}})
    assert response.status_code == 200, response.text
    (sent,) = CASES["gemini"].calls(gw)
    assert [r["title"] for r in sent.json["requests"]] == ["Magnets", "Magnets"]
    assert "title" not in sent.json
    response = http.post("/v1/embeddings", json={"model": "cohere", "input": ["a b"],
                                                 "extra_body": {"input_type": "clustering"}})
    assert response.status_code == 200, response.text
    (sent,) = CASES["cohere"].calls(gw)
    assert sent.json["input_type"] == "clustering"
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], typed_matrix(["a b"], 1536, "clustering")[0],
                               atol=2e-6)
