"""Through the gateway to a fake Perplexity upstream: /v1/embeddings (seed 001) and the
gateway's own POST /v1/contextualizedembeddings (seed 000).

Perplexity answers int8 or bits only: int8 passes through untouched when that is what the
client asked for, and is rebuilt as value/127, re-normalised, for float and base64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from fakes.perplexity_upstream import PerplexityUpstream
from fakes.vectors import binary_of, contextual_matrix, fake_matrix, fake_token_count, int8_of
from gateway.tokens import CL100K
from upstream_support import (
    ENCODINGS,
    FORMS,
    PPLX_KEY,
    Stack,
    check_vectors,
    decode,
    error_of,
    items_of,
    upstream_stack,
)

EMB = "/v1/embeddings"
CTX = "/v1/contextualizedembeddings"
PPLX_PRICE = 0.004  # what the fake charges for both 0.6b models
TEXT_FORMS = ["string", "strings"]
TOKEN_FORMS = ["token_ids", "token_arrays"]


def _more(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "pplx-nousage": {
            "provider": "perplexity",
            "base_url": extra["nousage"],
            "model": "pplx-embed-v1-0.6b",
            "api_key": PPLX_KEY,
            "price_per_million_tokens": 0.5,
        },
        "pplx-native": {
            "provider": "perplexity",
            "base_url": pplx,
            "model": "pplx-embed-v1-0.6b",
            "api_key": PPLX_KEY,
            "token_ids": "native",
        },
        "pplx-refuse": {
            "provider": "perplexity",
            "base_url": pplx,
            "model": "pplx-embed-v1-0.6b",
            "api_key": PPLX_KEY,
            "token_ids": "refuse",
        },
        "pplx-defaults": {
            "provider": "perplexity",
            "base_url": pplx,
            "model": "pplx-embed-v1-0.6b",
            "api_key": PPLX_KEY,
            "extra_body": {"priority": "low", "source": "gateway-default"},
        },
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    nousage = PerplexityUpstream(api_key=PPLX_KEY, include_usage=False)
    with upstream_stack(_more, extra_upstreams={"nousage": nousage}) as running:
        yield running


def _cost(tokens: int, price: float = PPLX_PRICE) -> float:
    return round(tokens * price / 1e6, 12)


# -- /v1/embeddings -----------------------------------------------------------------------


@pytest.mark.parametrize("form", TEXT_FORMS)
@pytest.mark.parametrize("dims", [None, 256], ids=["native-dims", "matryoshka"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_dimensions_and_text_form(
    gw: Stack, http: httpx.Client, encoding: str, dims: int | None, form: str
) -> None:
    value = FORMS[form]
    items = items_of(value)
    width = dims or 1024
    body: dict[str, Any] = {"model": "pplx", "input": value, "encoding_format": encoding}
    if dims is not None:
        body["dimensions"] = dims
    response = http.post(EMB, json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "list" and payload["model"] == "pplx"
    assert [(d["object"], d["index"]) for d in payload["data"]] == [("embedding", i) for i in range(len(items))]
    embeddings = [d["embedding"] for d in payload["data"]]
    expected = fake_matrix(items, width)
    check_vectors(encoding, embeddings, expected, exact=False)
    if encoding == "base64_int8":  # Perplexity's own bytes, untouched
        assert all(np.array_equal(decode(encoding, e, width), q) for e, q in zip(embeddings, int8_of(expected)))
    if encoding == "base64_binary":
        unpacked = np.unpackbits(binary_of(expected), axis=1, bitorder="little")
        assert all(np.array_equal(decode(encoding, e, width), u) for e, u in zip(embeddings, unpacked))

    (sent,) = gw.pplx.app.log.for_path(EMB)
    assert sent.header("authorization") == f"Bearer {PPLX_KEY}"
    assert sent.json["model"] == "pplx-embed-v1-0.6b" and sent.json["input"] == items
    assert sent.json["encoding_format"] == ("base64_binary" if encoding == "base64_binary" else "base64_int8")
    assert sent.json.get("dimensions") == dims

    tokens = sum(fake_token_count(t) for t in items)
    usage = payload["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == tokens
    # Perplexity's own cost is kept (the alias's configured price would give 99/M).
    assert usage["cost"] == {"input_cost": _cost(tokens), "total_cost": _cost(tokens), "currency": "USD"}
    assert "x-gateway-usage-estimated" not in response.headers


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_openai_sdk_against_a_perplexity_alias(gw: Stack, sdk: openai.OpenAI, encoding: str | None) -> None:
    texts = ["sdk one", "sdk two"]
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    result = sdk.embeddings.create(model="pplx", input=texts, dimensions=512, **extra)
    embeddings = [d.embedding for d in result.data]
    check_vectors(encoding or "float", embeddings, fake_matrix(texts, 512), exact=False)
    assert result.usage.prompt_tokens == 4


@pytest.mark.parametrize("form", TOKEN_FORMS)
def test_token_ids_reach_perplexity_as_their_cl100k_text(gw: Stack, sdk: openai.OpenAI, form: str) -> None:
    texts = CL100K.decode_sync(items_of(FORMS[form]))
    result = sdk.embeddings.create(model="pplx", input=FORMS[form], encoding_format="float")
    check_vectors("float", [d.embedding for d in result.data], fake_matrix(texts, 1024), exact=False)
    (sent,) = gw.pplx.app.log.for_path(EMB)
    assert sent.json["input"] == texts
    assert result.usage.prompt_tokens == sum(fake_token_count(t) for t in texts)


@pytest.mark.parametrize("alias, reason", [("pplx-native", "text only"), ("pplx-refuse", "token_ids: refuse")])
@pytest.mark.parametrize("form", TOKEN_FORMS)
def test_token_ids_are_refused_with_the_reason(gw: Stack, sdk: openai.OpenAI, form: str, alias: str, reason: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model=alias, input=FORMS[form])
    assert refused.value.status_code == 400
    message = str(refused.value.body["message"])  # type: ignore[index]
    assert reason in message and "token ids" in message and repr(alias) in message
    assert refused.value.param == "input"
    assert gw.pplx.app.log.count == 0


@pytest.mark.parametrize("encoding", ["base64_int8", "base64"])
def test_5000_strings_are_split_into_batches_and_merged_in_order(
    gw: Stack, http: httpx.Client, encoding: str
) -> None:
    texts = [f"document {i} about topic {i % 37}" for i in range(5000)]
    dims = 1024 if encoding == "base64_int8" else 256
    body: dict[str, Any] = {"model": "pplx", "input": texts, "encoding_format": encoding}
    if encoding == "base64":
        body["dimensions"] = dims
    response = http.post(EMB, json=body)
    assert response.status_code == 200, response.text[:500]

    sent = [r.json["input"] for r in gw.pplx.app.log.for_path(EMB)]
    assert all(len(batch) <= 512 for batch in sent), [len(b) for b in sent]
    assert len(sent) >= 10
    starts = sorted((texts.index(batch[0]), batch) for batch in sent)
    assert [t for _, batch in starts for t in batch] == texts  # contiguous slices, each once

    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(5000))
    expected = fake_matrix(texts, dims)
    if encoding == "base64_int8":
        got = np.stack([decode(encoding, d["embedding"], dims) for d in data])
        assert np.array_equal(got, int8_of(expected))  # every vector is its own text's
    else:
        check_vectors(encoding, [d["embedding"] for d in data], expected, exact=False)
    tokens = sum(fake_token_count(t) for t in texts)
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == tokens
    assert usage["cost"]["total_cost"] == pytest.approx(_cost(tokens), rel=1e-6)


def test_extra_body_metadata_and_request_id(gw: Stack, http: httpx.Client) -> None:
    response = http.post(
        EMB,
        headers={"x-request-id": "req-pplx-7"},
        json={
            "model": "pplx-defaults", "input": "x", "metadata": {"team": "search"},
            "truncate": True, "extra_body": {"priority": "high"},
        },
    )
    assert response.status_code == 200, response.text
    sent = gw.pplx.app.log.last
    assert sent.header("x-request-id") == "req-pplx-7"
    assert sent.json["truncate"] is True and sent.json["priority"] == "high"
    assert sent.json["source"] == "gateway-default"
    assert "metadata" not in sent.json and "extra_body" not in sent.json


def test_usage_estimated_when_the_upstream_reports_none(gw: Stack, http: httpx.Client) -> None:
    texts = ["one two three", "four five"]
    response = http.post(EMB, json={"model": "pplx-nousage", "input": texts})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-usage-estimated"] == "true"
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] >= len(texts)
    # No cost from the upstream: the configured price applies.
    assert usage["cost"]["total_cost"] == pytest.approx(usage["prompt_tokens"] * 0.5 / 1e6)


# -- /v1/contextualizedembeddings ----------------------------------------------------------

DOCS = [
    ["Paris is the capital of France.", "It is known for the Eiffel Tower.", "Population: 2.1 million."],
    ["Embeddings map text to vectors."],
    ["first chunk", "second chunk"],
]


def _contextualized(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(CTX, json={"model": "pplx-ctx", "input": DOCS, **body})


@pytest.mark.parametrize("dims", [None, 128], ids=["native-dims", "matryoshka"])
@pytest.mark.parametrize("encoding", [None, *ENCODINGS])
def test_contextualized_shape_encodings_and_dimensions(
    gw: Stack, http: httpx.Client, encoding: str | None, dims: int | None
) -> None:
    body: dict[str, Any] = {}
    if encoding is not None:
        body["encoding_format"] = encoding
    if dims is not None:
        body["dimensions"] = dims
    response = _contextualized(http, **body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "list" and payload["model"] == "pplx-ctx"
    width = dims or 1024
    client_encoding = encoding or "base64_int8"  # the seed's default
    assert len(payload["data"]) == len(DOCS)
    for d, (entry, doc) in enumerate(zip(payload["data"], DOCS)):
        assert entry["object"] == "list" and entry["index"] == d
        assert [(c["object"], c["index"]) for c in entry["data"]] == [("embedding", i) for i in range(len(doc))]
        expected = contextual_matrix(doc, width)
        chunks = [c["embedding"] for c in entry["data"]]
        check_vectors(client_encoding, chunks, expected, exact=False)
        if client_encoding == "base64_int8":
            assert all(np.array_equal(decode(client_encoding, e, width), q) for e, q in zip(chunks, int8_of(expected)))

    (sent,) = gw.pplx.app.log.for_path(CTX)
    assert sent.json["input"] == DOCS and sent.json["model"] == "pplx-embed-context-v1-0.6b"
    assert sent.json.get("dimensions") == dims
    assert sent.json["encoding_format"] == ("base64_binary" if encoding == "base64_binary" else "base64_int8")
    tokens = sum(fake_token_count(c) for doc in DOCS for c in doc)
    usage = payload["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == tokens
    assert usage["cost"] == {"input_cost": _cost(tokens), "total_cost": _cost(tokens), "currency": "USD"}


@pytest.mark.parametrize("alias", ["pplx", "oai-small"])
def test_contextualized_needs_an_alias_that_supports_it(gw: Stack, http: httpx.Client, alias: str) -> None:
    response = http.post(CTX, json={"model": alias, "input": DOCS})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "model"
    assert "pplx-ctx" in error["message"] and alias in error["message"]
    assert gw.pplx.app.log.count == 0 and gw.oai.app.log.count == 0


def test_contextualized_alias_on_the_flat_endpoint_is_refused(gw: Stack, http: httpx.Client) -> None:
    response = http.post(EMB, json={"model": "pplx-ctx", "input": "x"})
    assert response.status_code == 400
    assert "contextualizedembeddings" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("documents", "param", "words"),
    [
        ([["a"], []], "input[1]", "non-empty"),
        ([["a", ""]], "input[0][1]", "non-empty"),
        ([["a", 5]], "input[0][1]", "string"),
        ([], "input", "non-empty"),
        ("just text", "input", "array"),
        ([["x"]] * 513, "input", "512"),
    ],
    ids=["empty-document", "empty-chunk", "chunk-not-string", "no-documents", "not-nested", "513-documents"],
)
def test_contextualized_validation(
    gw: Stack, http: httpx.Client, documents: Any, param: str, words: str
) -> None:
    response = http.post(CTX, json={"model": "pplx-ctx", "input": documents})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param and words in error["message"]
    assert gw.pplx.app.log.count == 0


def test_contextualized_512_documents_is_fine(gw: Stack, http: httpx.Client) -> None:
    documents = [[f"doc {d} chunk {c}" for c in range(2)] for d in range(512)]
    response = http.post(CTX, json={"model": "pplx-ctx", "input": documents, "dimensions": 128})
    assert response.status_code == 200, response.text[:300]
    data = response.json()["data"]
    assert len(data) == 512 and data[511]["index"] == 511
    got = decode("base64_int8", data[300]["data"][1]["embedding"], 128)
    assert np.array_equal(got, int8_of(contextual_matrix(documents[300], 128))[1])
    assert all(len(r.json["input"]) <= 512 for r in gw.pplx.app.log.for_path(CTX))
