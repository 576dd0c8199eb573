"""Through the gateway to a fake OpenAI-style upstream, with the official openai SDK.

Every encoding × dimensions × input form; extra_body, unknown fields, metadata, user and
x-request-id as the upstream receives them; usage passed through, estimated and priced;
/v1/models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, cast

import httpx
import numpy as np
import openai
import pytest

from fakes.openai_upstream import OpenAIUpstream
from fakes.vectors import fake_matrix, fake_token_count
from gateway.tokens import CL100K
from upstream_support import (
    ENCODINGS,
    FORMS,
    OAI_KEY,
    OAI_PRICE,
    Stack,
    check_vectors,
    error_of,
    items_of,
    upstream_stack,
)

NATIVE = {"oai-small": 1536, "oai-mini": 384}
#: A valid Matryoshka size per alias: native for oai-small, gateway truncation for oai-mini.
SMALLER = {"oai-small": 256, "oai-mini": 128}


def _more(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "oai-defaults": {
            "provider": "openai",
            "base_url": f"{oai}/v1",
            "model": "text-embedding-3-small",
            "api_key": OAI_KEY,
            "extra_body": {"priority": "low", "source": "gateway-default"},
        },
        # Like oai-mini, but its own provider (settings differ), so its width is unknown
        # until the test below makes its first call.
        "oai-mini-cold": {
            "provider": "openai",
            "base_url": f"{oai}/v1",
            "model": "fake-minilm",
            "api_key": OAI_KEY,
            "matryoshka": True,
            "max_connections": 7,
        },
        "oai-nousage": {
            "provider": "openai",
            "base_url": f"{extra['nousage']}/v1",
            "model": "text-embedding-3-small",
            "api_key": OAI_KEY,
            "price_per_million_tokens": OAI_PRICE,
        },
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    nousage = OpenAIUpstream(api_key=OAI_KEY, include_usage=False)
    with upstream_stack(_more, extra_upstreams={"nousage": nousage}) as running:
        yield running


def _embed(
    sdk: openai.OpenAI, http: httpx.Client, alias: str, value: Any, encoding: str, dims: int | None
) -> tuple[list[Any], dict[str, Any], Mapping[str, str]]:
    """The SDK for the encodings it knows (float, base64); plain HTTP for the others."""
    if encoding in ("float", "base64"):
        extra: dict[str, Any] = {"dimensions": dims} if dims is not None else {}
        sdk_encoding = cast(Literal["float", "base64"], encoding)
        raw = sdk.embeddings.with_raw_response.create(model=alias, input=value, encoding_format=sdk_encoding, **extra)
        parsed = raw.parse()
        assert parsed.object == "list" and parsed.model == alias
        assert [d.index for d in parsed.data] == list(range(len(parsed.data)))
        assert all(d.object == "embedding" for d in parsed.data)
        return [d.embedding for d in parsed.data], parsed.usage.model_dump(), raw.headers
    body: dict[str, Any] = {"model": alias, "input": value, "encoding_format": encoding}
    if dims is not None:
        body["dimensions"] = dims
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "list" and payload["model"] == alias
    assert [d["index"] for d in payload["data"]] == list(range(len(payload["data"])))
    return [d["embedding"] for d in payload["data"]], payload["usage"], response.headers


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("sized", [False, True], ids=["native-dims", "matryoshka"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("alias", list(NATIVE))
def test_every_encoding_dimensions_and_input_form(
    gw: Stack, sdk: openai.OpenAI, http: httpx.Client, alias: str, encoding: str, sized: bool, form: str
) -> None:
    value = FORMS[form]
    items = items_of(value)
    if alias == "oai-mini" and form.startswith("token"):
        # Not one of OpenAI's own models: the ids are read as cl100k_base, sent as their text.
        items = CL100K.decode_sync(items)
    dims = SMALLER[alias] if sized else None
    width = dims or NATIVE[alias]
    embeddings, usage, headers = _embed(sdk, http, alias, value, encoding, dims)

    check_vectors(encoding, embeddings, fake_matrix(items, width), exact=True)
    tokens = sum(fake_token_count(item) for item in items)
    assert usage["prompt_tokens"] == usage["total_tokens"] == tokens
    assert usage["cost"]["total_cost"] == pytest.approx(tokens * OAI_PRICE / 1e6)
    assert headers.get("x-gateway-usage-estimated") is None
    assert headers["x-gateway-provider"] == "openai" and headers["x-gateway-deployment"] == alias

    (sent,) = gw.oai.app.log.for_path("/v1/embeddings")
    assert sent.json["input"] == items  # text-embedding-3-small's token ids pass through untouched
    assert sent.header("authorization") == f"Bearer {OAI_KEY}"
    if alias == "oai-small":  # native dimensions: forwarded; base64 asked of the upstream
        assert sent.json["encoding_format"] == "base64"
        assert sent.json.get("dimensions") == dims
    else:  # a float-only upstream without dimensions: the gateway truncates
        assert sent.json["encoding_format"] == "float"
        assert "dimensions" not in sent.json


def test_gateway_truncation_before_the_width_is_known(gw: Stack, http: httpx.Client) -> None:
    def ask(dims: int) -> httpx.Response:
        return http.post("/v1/embeddings", json={"model": "oai-mini-cold", "input": "x", "dimensions": dims})

    # The very first call comes before the width is learned: too wide is found from the answer...
    for _ in range(2):  # ...and the second time, from the learned width, before any call
        too_wide = ask(1000)
        assert too_wide.status_code == 400, too_wide.text
        error = error_of(too_wide)
        assert error["param"] == "dimensions" and "between 1 and 384" in error["message"]
    assert gw.oai.app.log.count == 1
    fits = ask(128)
    assert fits.status_code == 200, fits.text
    check_vectors("float", [fits.json()["data"][0]["embedding"]], fake_matrix(["x"], 128), exact=True)


def test_sdk_default_base64_is_decoded_by_the_sdk(gw: Stack, sdk: openai.OpenAI) -> None:
    texts = ["first text", "second text here"]
    result = sdk.embeddings.create(model="oai-small", input=texts, dimensions=512)
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, fake_matrix(texts, 512), atol=2e-6)


def test_extra_body_and_unknown_fields_reach_the_upstream(gw: Stack, sdk: openai.OpenAI, http: httpx.Client) -> None:
    # The SDK puts extra_body's contents at the top level of the JSON body.
    sdk.embeddings.create(
        model="oai-small", input="x", encoding_format="float",
        extra_body={"priority": "high", "options": {"truncate": "END", "n": 2}},
    )
    sent = gw.oai.app.log.last.json
    assert sent["priority"] == "high" and sent["options"] == {"truncate": "END", "n": 2}
    assert sent["model"] == "text-embedding-3-small" and sent["input"] == ["x"]

    # The gateway's own extra_body field is merged too (and wins over a top-level twin).
    response = http.post(
        "/v1/embeddings",
        json={"model": "oai-small", "input": "y", "custom": 1, "extra_body": {"custom": 2, "other": "z"}},
    )
    assert response.status_code == 200, response.text
    sent = gw.oai.app.log.last.json
    assert sent["custom"] == 2 and sent["other"] == "z" and "extra_body" not in sent


@pytest.mark.parametrize("key", ["model", "input"])
def test_extra_body_never_overrides_model_or_input(gw: Stack, http: httpx.Client, key: str) -> None:
    response = http.post(
        "/v1/embeddings", json={"model": "oai-small", "input": "x", "extra_body": {key: "hijacked"}}
    )
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == f"extra_body.{key}"
    assert "never override" in error["message"]
    assert gw.oai.app.log.count == 0


def test_extra_body_cannot_change_what_the_gateway_asks_for(gw: Stack, http: httpx.Client) -> None:
    response = http.post(
        "/v1/embeddings",
        json={"model": "oai-small", "input": "x", "dimensions": 64, "extra_body": {"encoding_format": "float", "dimensions": 8}},
    )
    assert response.status_code == 200, response.text
    sent = gw.oai.app.log.last.json
    assert sent["encoding_format"] == "base64" and sent["dimensions"] == 64
    assert len(response.json()["data"][0]["embedding"]) == 64


def test_deployment_extra_body_defaults_merge_under_the_request(gw: Stack, sdk: openai.OpenAI) -> None:
    sdk.embeddings.create(model="oai-defaults", input="x", extra_body={"priority": "high"})
    sent = gw.oai.app.log.last.json
    assert sent["priority"] == "high"  # the request's value wins
    assert sent["source"] == "gateway-default"  # the deployment's default fills in
    sdk.embeddings.create(model="oai-defaults", input="x")
    assert gw.oai.app.log.last.json["priority"] == "low"


def test_metadata_is_not_forwarded_and_user_is(gw: Stack, sdk: openai.OpenAI) -> None:
    sdk.embeddings.create(
        model="oai-small", input="x", user="alice@example", extra_body={"metadata": {"team": "search"}}
    )
    sent = gw.oai.app.log.last.json
    assert "metadata" not in sent
    assert sent["user"] == "alice@example"


def test_request_id_reaches_the_upstream(gw: Stack, sdk: openai.OpenAI, http: httpx.Client) -> None:
    raw = sdk.embeddings.with_raw_response.create(
        model="oai-small", input="x", extra_headers={"x-request-id": "req-sdk-42"}
    )
    assert raw.headers["x-request-id"] == "req-sdk-42"
    assert gw.oai.app.log.last.header("x-request-id") == "req-sdk-42"
    # Without one from the client, the gateway's own id is sent and echoed.
    response = http.post("/v1/embeddings", json={"model": "oai-small", "input": "x"})
    generated = response.headers["x-request-id"]
    assert generated and gw.oai.app.log.last.header("x-request-id") == generated


def test_usage_from_the_upstream_and_priced(gw: Stack, http: httpx.Client) -> None:
    texts = ["one two three", "four five", "six"]
    response = http.post("/v1/embeddings", json={"model": "oai-small", "input": texts})
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] == 6  # the fake counts words
    assert usage["cost"] == {"input_cost": pytest.approx(6 * OAI_PRICE / 1e6), "total_cost": pytest.approx(6 * OAI_PRICE / 1e6), "currency": "USD"}
    assert "x-gateway-usage-estimated" not in response.headers


def test_usage_estimated_when_the_upstream_reports_none(gw: Stack, http: httpx.Client) -> None:
    texts = ["one two three", "four five", "six"]
    response = http.post("/v1/embeddings", json={"model": "oai-nousage", "input": texts})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-usage-estimated"] == "true"
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] >= len(texts)
    assert usage["cost"]["total_cost"] == pytest.approx(usage["prompt_tokens"] * OAI_PRICE / 1e6)
    check_vectors("float", [d["embedding"] for d in response.json()["data"]], fake_matrix(texts, 1536), exact=True)

    # Token ids are counted exactly, so nothing is estimated.
    exact = http.post("/v1/embeddings", json={"model": "oai-nousage", "input": [[1, 2, 3], [4, 5]]})
    assert exact.json()["usage"]["prompt_tokens"] == 5
    assert "x-gateway-usage-estimated" not in exact.headers


def test_models_lists_the_upstream_aliases_with_dimensions(gw: Stack, sdk: openai.OpenAI, http: httpx.Client) -> None:
    sdk.embeddings.create(model="oai-mini", input="learn the width")  # width learned from an answer
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert {"oai-small", "oai-mini", "oai-mini-cold", "oai-defaults", "oai-nousage", "pplx", "pplx-ctx"} <= set(listed)
    assert listed["oai-small"]["dimensions"] == 1536
    assert listed["oai-mini"]["dimensions"] == 384
    assert listed["pplx"]["dimensions"] == 1024 and listed["pplx-ctx"]["dimensions"] == 1024
    assert listed["pplx-ctx"]["contextualized"] is True and listed["oai-small"]["contextualized"] is False
    for entry in listed.values():
        assert entry["object"] == "model" and set(entry["encodings"]) == set(ENCODINGS)
    assert {m.id for m in sdk.models.list()} == set(listed)
