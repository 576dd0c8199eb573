"""Cohere, Voyage, Gemini and Jina failures through the gateway, each in its provider's own
error shape: mapped into the provider error tree and answered with the gateway's status,
never a 500, never the upstream key. Plus the settings each provider refuses at load."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from retrieval_support import CASES, KEYS, alias, retrieval_stack
from upstream_support import Stack, error_of

WRONG = {name: f"{key}-wrong" for name, key in KEYS.items()}


def _more(extra: dict[str, str]) -> dict[str, Any]:
    aliases = {f"{name}-badkey": alias(name, extra[name], api_key=WRONG[name]) for name in CASES}
    aliases["gemini-nokey"] = alias("gemini", extra["gemini"], api_key=None)
    return aliases


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with retrieval_stack(_more) as running:
        yield running


def _post(http: httpx.Client, model: str, **body: Any) -> httpx.Response:
    response = http.post("/v1/embeddings", json={"model": model, "input": ["hello world", "second"], **body})
    assert response.status_code != 500, response.text
    for secret in (*KEYS.values(), *WRONG.values()):
        assert secret not in response.text
    return response


def _expect(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    return error


STATUS_CASES = [(401, 502, "upstream_auth_error"), (403, 502, "upstream_auth_error"),
                (500, 502, "upstream_error"), (503, 503, "upstream_unavailable")]


@pytest.mark.parametrize(("upstream", "status", "code"), STATUS_CASES, ids=[str(c[0]) for c in STATUS_CASES])
@pytest.mark.parametrize("provider", list(CASES))
def test_upstream_status_is_mapped(gw: Stack, http: httpx.Client, provider: str, upstream: int,
                                   status: int, code: str) -> None:
    gw.extra[provider].app.faults.add("status", status=upstream, message=f"no ({upstream})")
    error = _expect(_post(http, provider), status, code)
    if upstream in (401, 403):
        assert "credentials" in error["message"] and "no (" not in error["message"]
    else:
        assert f"no ({upstream})" in error["message"]


@pytest.mark.parametrize("provider", list(CASES))
def test_429_keeps_the_providers_retry_delay(gw: Stack, http: httpx.Client, provider: str) -> None:
    # The fake Gemini moves the delay into a google.rpc.RetryInfo detail, as Google does.
    gw.extra[provider].app.faults.add("status", status=429, retry_after="7", message="slow down")
    response = _post(http, provider)
    error = _expect(response, 429, "upstream_rate_limited")
    assert response.headers["retry-after"] == "7" and "slow down" in error["message"]


@pytest.mark.parametrize("provider", list(CASES))
def test_a_wrong_key_is_refused_credentials(gw: Stack, http: httpx.Client, provider: str) -> None:
    # Gemini answers a bad key with 400 API_KEY_INVALID, which must not read as the client's fault.
    _expect(_post(http, f"{provider}-badkey"), 502, "upstream_auth_error")


def test_gemini_without_a_key_is_refused_credentials(gw: Stack, http: httpx.Client) -> None:
    _expect(_post(http, "gemini-nokey"), 502, "upstream_auth_error")
    assert gw.extra["gemini"].app.log.last.header("x-goog-api-key") is None


MALFORMED = [("invalid_json", {}), ("wrong_count", {}), ("wrong_count", {"delta": 1}), ("wrong_dims", {}),
             ("nan", {}), ("drop", {}), ("drop", {"when": "mid_body"})]


@pytest.mark.parametrize(("mode", "params"), MALFORMED, ids=[f"{m}-{p}" for m, p in MALFORMED])
@pytest.mark.parametrize("provider", list(CASES))
def test_malformed_answers_are_502(gw: Stack, http: httpx.Client, provider: str, mode: str,
                                   params: dict[str, Any]) -> None:
    gw.extra[provider].app.faults.add(mode, **params)
    response = _post(http, provider)
    assert response.status_code == 502, response.text
    error_of(response)


@pytest.mark.parametrize("provider", ["cohere", "voyage", "jina"])
@pytest.mark.parametrize("mode", ["wrong_dims", "wrong_count"])
def test_malformed_binary_answers_are_502(gw: Stack, http: httpx.Client, provider: str, mode: str) -> None:
    gw.extra[provider].app.faults.add(mode)
    assert _post(http, provider, encoding_format="base64_binary").status_code == 502


def test_indexed_answers_out_of_order_are_put_back(gw: Stack, http: httpx.Client) -> None:
    plain = _post(http, "voyage").json()["data"]
    for provider in ("voyage", "jina"):
        gw.extra[provider].app.faults.add("reorder")
        again = _post(http, provider).json()["data"]
        assert [d["index"] for d in again] == [0, 1]
    assert plain[0]["embedding"] != plain[1]["embedding"]


def test_the_upstreams_own_validation_message_reaches_the_client(gw: Stack, http: httpx.Client) -> None:
    error = _expect(_post(http, "voyage", truncation="sometimes"), 400, "invalid_value")
    assert "truncation must be a boolean" in error["message"]


def test_no_key_in_any_log_line(gw: Stack, http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for provider in CASES:
            gw.extra[provider].app.faults.add("status", status=500, message=f"echo {KEYS[provider]}")
            _post(http, provider)
            _post(http, f"{provider}-badkey")
    for secret in (*KEYS.values(), *WRONG.values()):
        assert secret not in caplog.text


# -- settings refused at load ------------------------------------------------------------------


def _errors(models: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_config({"models": models, "usage": {"ledger": "off"}}, env={})
    return refused.value.errors if hasattr(refused.value, "errors") else [str(refused.value)]


def test_a_fallback_from_cohere_to_voyage_needs_one_space() -> None:
    deployments = [
        {"name": "co", "provider": "cohere", "model": "embed-v4.0", "api_key": "k"},
        {"name": "vo", "provider": "voyage", "model": "voyage-3.5", "api_key": "k"},
    ]
    text = " ".join(_errors({"docs": {"routing": "fallback", "deployments": deployments}}))
    assert "mixes vector spaces" in text and "co (space 'embed-v4.0')" in text and "vo (space 'voyage-3.5')" in text
    shared = [{**d, "space": "team-space"} for d in deployments]
    config = parse_config({"models": {"docs": {"routing": "fallback", "deployments": shared}},
                           "usage": {"ledger": "off"}}, env={})
    assert [d.provider for d in config.models["docs"].deployments] == ["cohere", "voyage"]


@pytest.mark.parametrize("provider", list(CASES))
def test_each_provider_needs_a_model(provider: str) -> None:
    text = " ".join(_errors({"m": {"provider": provider, "api_key": "k"}}))
    assert "models.m" in text and "model" in text


def test_cohere_input_type_default_is_checked() -> None:
    text = " ".join(_errors({"m": {"provider": "cohere", "model": "embed-v4.0", "cohere_input_type": "query"}}))
    assert "cohere_input_type" in text and "search_document" in text
