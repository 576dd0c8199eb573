"""Upstream failures through the gateway: each mapped to its status, never a 500, and the
upstream key never in a response body or a log line.

    upstream 400/422            → 400 with the upstream's message (its key redacted)
    upstream 401/403            → 502 upstream_auth_error
    upstream 429                → 429 with the upstream's Retry-After
    upstream 500 / 502 / 503    → 502 / 503 / 503
    no answer within timeout_s  → 504
    dropped connection, invalid JSON, wrong count, wrong dimensions, bad indices, NaN → 502
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from fakes.vectors import contextual_matrix, fake_matrix
from upstream_support import (
    OAI_KEY,
    PPLX_KEY,
    SECRETS,
    Stack,
    check_vectors,
    error_of,
    upstream_stack,
)

EMB = "/v1/embeddings"
CTX = "/v1/contextualizedembeddings"
WRONG_OAI_KEY = "sk-upstream-SECRET-wrong-0a1b2c3d4e5f"
WRONG_PPLX_KEY = "pplx-SECRET-wrong-9z8y7x6w5v"
ALL_SECRETS = (*SECRETS, WRONG_OAI_KEY, WRONG_PPLX_KEY)
TIMEOUT_S = 0.5


def _more(oai: str, pplx: str, extra: dict[str, str]) -> dict[str, Any]:
    def oai_alias(**settings: Any) -> dict[str, Any]:
        return {"provider": "openai", "base_url": f"{oai}/v1", "model": "text-embedding-3-small", "api_key": OAI_KEY, **settings}

    def pplx_alias(**settings: Any) -> dict[str, Any]:
        return {"provider": "perplexity", "base_url": pplx, "model": "pplx-embed-v1-0.6b", "api_key": PPLX_KEY, **settings}

    return {
        "oai-timeout": oai_alias(timeout_s=TIMEOUT_S),
        "pplx-timeout": pplx_alias(timeout_s=TIMEOUT_S),
        "pplx-ctx-timeout": pplx_alias(model="pplx-embed-context-v1-0.6b", timeout_s=TIMEOUT_S),
        # Its own provider (settings differ): a fresh deployment that has learned nothing.
        "oai-fresh": oai_alias(max_connections=3),
        "oai-badkey": oai_alias(api_key=WRONG_OAI_KEY),
        "pplx-badkey": pplx_alias(api_key=WRONG_PPLX_KEY),
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with upstream_stack(_more) as running:
        yield running


def _post(http: httpx.Client, alias: str, **body: Any) -> httpx.Response:
    path = CTX if "ctx" in alias else EMB
    default_input: Any = [["chunk one", "chunk two"], ["other doc"]] if "ctx" in alias else ["hello world", "second"]
    response = http.post(path, json={"model": alias, "input": default_input, **body})
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        error_of(response)  # OpenAI's error shape, always
    return response


def _expect(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = error_of(response)
    if code is not None:
        assert error["code"] == code, error
    return error


# -- status codes ------------------------------------------------------------------------

STATUS_CASES = [
    # (upstream status, gateway status, code)
    (400, 400, "invalid_value"),
    (422, 400, "invalid_value"),
    (401, 502, "upstream_auth_error"),
    (403, 502, "upstream_auth_error"),
    (404, 502, "upstream_error"),
    (500, 502, "upstream_error"),
    (502, 503, "upstream_unavailable"),
    (503, 503, "upstream_unavailable"),
]


@pytest.mark.parametrize(("upstream", "status", "code"), STATUS_CASES, ids=[str(c[0]) for c in STATUS_CASES])
@pytest.mark.parametrize("alias", ["oai-small", "pplx", "pplx-ctx"])
def test_upstream_status_is_mapped(gw: Stack, http: httpx.Client, alias: str, upstream: int, status: int, code: str) -> None:
    server = gw.oai if alias.startswith("oai") else gw.pplx
    server.app.faults.add("status", status=upstream, message=f"upstream says no ({upstream})")
    error = _expect(_post(http, alias), status, code)
    if upstream in (400, 422):  # the client can fix it: the upstream's words reach it
        assert f"upstream says no ({upstream})" in error["message"]
    if upstream in (401, 403):  # the client can't fix our key: nothing of the upstream's text
        assert "upstream says no" not in error["message"]
        assert "credentials" in error["message"]


@pytest.mark.parametrize("alias", ["oai-small", "pplx"])
def test_upstream_429_keeps_its_retry_after(gw: Stack, http: httpx.Client, alias: str) -> None:
    server = gw.oai if alias.startswith("oai") else gw.pplx
    server.app.faults.add("status", status=429, retry_after="7", message="slow down")
    response = _post(http, alias)
    error = _expect(response, 429, "upstream_rate_limited")
    assert response.headers["retry-after"] == "7"
    assert "slow down" in error["message"]


def test_upstream_429_through_the_openai_sdk(gw: Stack, stack: Stack) -> None:
    gw.oai.app.faults.add("status", status=429, retry_after_ms=3000)
    with stack.sdk() as sdk, pytest.raises(openai.RateLimitError) as limited:
        sdk.embeddings.create(model="oai-small", input="x")
    assert limited.value.response.headers["retry-after"] == "3"


def test_natural_upstream_validation_errors(gw: Stack, http: httpx.Client) -> None:
    # Perplexity counts 32,769 "tokens" (words); the gateway's byte estimate lets it through.
    huge = " ".join(["w"] * 32_769)
    error = _expect(_post(http, "pplx", input=["fine", huge]), 400, "invalid_value")
    assert error["param"] == "input[1]" and "32769 tokens" in error["message"]
    # In the second batch of 512 the upstream says input[88]: the client hears input[600].
    texts = [f"t {i}" for i in range(700)]
    texts[600] = huge
    error = _expect(_post(http, "pplx", input=texts), 400, "invalid_value")
    assert error["param"] == "input[600]" and "input[600]" in error["message"]


def test_a_wrong_upstream_key_is_502(gw: Stack, http: httpx.Client) -> None:
    for alias in ("oai-badkey", "pplx-badkey"):
        error = _expect(_post(http, alias), 502, "upstream_auth_error")
        assert "credentials" in error["message"]


def test_one_failed_batch_fails_the_whole_request(gw: Stack, http: httpx.Client) -> None:
    gw.pplx.app.faults.add("status", status=500)
    response = _post(http, "pplx", input=[f"text {i}" for i in range(1500)])
    _expect(response, 502, "upstream_error")
    assert "data" not in response.json()


# -- timeouts, dropped connections, malformed answers -----------------------------------


@pytest.mark.parametrize("alias", ["oai-timeout", "pplx-timeout", "pplx-ctx-timeout"])
def test_hang_past_the_deployment_timeout_is_504(gw: Stack, http: httpx.Client, alias: str) -> None:
    server = gw.oai if alias.startswith("oai") else gw.pplx
    server.app.faults.add("hang", seconds=30)
    _expect(_post(http, alias), 504, "upstream_timeout")


def test_a_delay_within_the_timeout_is_fine(gw: Stack, http: httpx.Client) -> None:
    gw.oai.app.faults.add("delay", seconds=0.1)
    assert _post(http, "oai-timeout").status_code == 200


@pytest.mark.parametrize("when", ["before_response", "mid_body", "reset"])
@pytest.mark.parametrize("alias", ["oai-small", "pplx"])
def test_dropped_connection_is_502(gw: Stack, http: httpx.Client, alias: str, when: str) -> None:
    server = gw.oai if alias.startswith("oai") else gw.pplx
    server.app.faults.add("drop", when=when)
    response = _post(http, alias)
    _expect(response, 502, "upstream_connection_error")
    assert "connection" in error_of(response)["message"]


MALFORMED = [
    ("invalid_json", {}),
    ("wrong_count", {"delta": -1}),
    ("wrong_count", {"delta": 1}),
    ("wrong_dims", {}),
    ("bad_index", {"kind": "duplicate"}),
    ("bad_index", {"kind": "out_of_range"}),
]
MALFORMED_IDS = ["invalid-json", "one-too-few", "one-too-many", "wrong-dims", "duplicate-index", "index-out-of-range"]


@pytest.mark.parametrize(("mode", "params"), [*MALFORMED, ("nan", {})], ids=[*MALFORMED_IDS, "nan"])
def test_malformed_openai_answers_are_502(gw: Stack, http: httpx.Client, mode: str, params: dict[str, Any]) -> None:
    gw.oai.app.faults.add(mode, **params)
    _expect(_post(http, "oai-small", dimensions=256), 502, "upstream_error")


@pytest.mark.parametrize(("mode", "params"), MALFORMED, ids=MALFORMED_IDS)
@pytest.mark.parametrize("alias", ["pplx", "pplx-ctx"])
def test_malformed_perplexity_answers_are_502(
    gw: Stack, http: httpx.Client, alias: str, mode: str, params: dict[str, Any]
) -> None:
    gw.pplx.app.faults.add(mode, **params)
    _expect(_post(http, alias), 502, "upstream_error")


@pytest.mark.parametrize("mode", ["wrong_count", "bad_index", "reorder"])
def test_contextualized_document_level_faults(gw: Stack, http: httpx.Client, mode: str) -> None:
    gw.pplx.app.faults.add(mode, level="documents")
    response = _post(http, "pplx-ctx", encoding_format="float")
    if mode != "reorder":
        _expect(response, 502, "upstream_error")
        return
    assert response.status_code == 200  # listed in reverse, indices right: put back in order
    docs = [["chunk one", "chunk two"], ["other doc"]]
    for entry, doc in zip(response.json()["data"], docs):
        check_vectors("float", [c["embedding"] for c in entry["data"]], contextual_matrix(doc, 1024), exact=False)


def test_a_fresh_deployment_refuses_a_narrower_first_answer(gw: Stack, http: httpx.Client) -> None:
    gw.oai.app.faults.add("wrong_dims")
    _expect(_post(http, "oai-fresh"), 502, "upstream_error")
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert listed["oai-fresh"]["dimensions"] == 1536


@pytest.mark.parametrize("alias", ["oai-small", "pplx"])
def test_reordered_items_are_put_back_in_input_order(gw: Stack, http: httpx.Client, alias: str) -> None:
    server = gw.oai if alias.startswith("oai") else gw.pplx
    server.app.faults.add("reorder")
    texts = ["a b", "c d e", "f"]
    response = _post(http, alias, input=texts, dimensions=256)
    assert response.status_code == 200, response.text
    check_vectors("float", [d["embedding"] for d in response.json()["data"]], fake_matrix(texts, 256), exact=alias.startswith("oai"))


# -- secrets ----------------------------------------------------------------------------


def _loud(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("gateway", "providers", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)


def test_the_upstream_key_is_in_no_body_and_no_log_line(
    gw: Stack, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    _loud(caplog)
    bodies: list[str] = []
    for alias, server, key in (("oai-small", gw.oai, OAI_KEY), ("pplx", gw.pplx, PPLX_KEY), ("pplx-ctx", gw.pplx, PPLX_KEY)):
        echo = f"Incorrect API key provided: {key}. Authorization: Bearer {key}"
        for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504):
            server.app.faults.add("status", status=status, message=echo, retry_after="1")
            bodies.append(_post(http, alias).text)
        # FastAPI-shaped errors: the key in the message and in the location (the param).
        server.app.faults.add("status", status=422, body={"detail": [{"loc": ["body", key], "msg": echo, "type": "x"}]})
        redacted = _post(http, alias)
        assert redacted.status_code == 400
        assert "[redacted]" in error_of(redacted)["message"] and error_of(redacted)["param"] == "[redacted]"
        bodies.append(redacted.text)
        # A plain-text error body, and an error in an otherwise fine-looking 200.
        server.app.faults.add("status", status=500, body=echo)
        bodies.append(_post(http, alias).text)
        server.app.faults.add("invalid_json", body=f'{{"error": "{key}"')
        bodies.append(_post(http, alias).text)
        for when in ("before_response", "mid_body", "reset"):
            server.app.faults.add("drop", when=when)
            bodies.append(_post(http, alias).text)
    for alias in ("oai-badkey", "pplx-badkey", "oai-timeout"):
        if alias == "oai-timeout":
            gw.oai.app.faults.add("hang", seconds=30)
        bodies.append(_post(http, alias).text)
    bodies.append(http.get("/v1/models").text)
    bodies.append(http.get("/metrics").text)

    assert len(bodies) > 50
    for body in bodies:
        for secret in ALL_SECRETS:
            assert secret not in body
            assert secret[-12:] not in body  # not even a tail of it
    assert any(r.name.startswith("gateway") for r in caplog.records), "the gateway's logs were not captured"
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for secret in ALL_SECRETS:
        assert secret not in logged
        assert secret[-12:] not in logged
