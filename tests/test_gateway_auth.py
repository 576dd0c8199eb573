"""Gateway keys and rate limits through real HTTP: 401, 403, /v1/models per key, rpm/tpm 429s, the openai SDK.

The limiter runs on the real clock, so no test depends on timing: buckets start full and
refill by one request (or a few tokens) per many seconds, so a quick burst meets the limit.
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.server import run_in_thread
from gateway.app import create_app
from serving import LOCAL

KEYS = {
    "full": "gk-auth-full-secret",
    "emb": "gk-auth-emb-secret",
    "limited": "gk-auth-limited-secret",
    "tokens": "gk-auth-tokens-secret",
    "sdk-tiny": "gk-auth-sdk-tiny-secret",
}
WRONG = "gk-auth-not-a-real-key"
ERROR_FIELDS = {"message", "type", "param", "code"}


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS.get(name, name)}"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_in_thread(OpenAIUpstream()) as upstream:
        fake = {"provider": "openai", "base_url": f"{upstream.base_url}/v1", "model": "fake-minilm"}
        config = make_config(
            {"mini": LOCAL, "emb-a": fake, "emb-b": fake},
            auth={"keys": [
                {"id": "full", "key": KEYS["full"]},
                {"id": "emb", "key": KEYS["emb"], "models": ["emb-*"]},
                {"id": "limited", "key": KEYS["limited"], "models": ["mini"], "rpm": 3, "tpm": 100_000},
                {"id": "tokens", "key": KEYS["tokens"], "models": ["mini"], "tpm": 40},
                {"id": "sdk-tiny", "key": KEYS["sdk-tiny"], "rpm": 1},
            ]},
        )
        with run_in_thread(create_app(config), lifespan="on", startup_timeout=60) as server:
            yield server.base_url


@pytest.fixture()
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": f"Bearer {WRONG}"}, {"authorization": f"Basic {KEYS['full']}"}, {"authorization": "Bearer"}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/embeddings"), ("POST", "/v1/contextualizedembeddings"), ("GET", "/v1/models")],
)
def test_no_valid_key_is_401(http: httpx.Client, headers: dict[str, str], method: str, path: str) -> None:
    body = {"model": "mini", "input": [["a"]] if "contextualized" in path else "hello"}
    response = http.request(method, path, json=body if method == "POST" else None, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="embedding-gateway"'
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert "Authorization: Bearer" in error["message"]
    assert WRONG not in response.text and KEYS["full"] not in response.text


def test_an_alias_outside_the_keys_globs_is_403(http: httpx.Client) -> None:
    allowed = http.post("/v1/embeddings", json={"model": "emb-b", "input": "x"}, headers=bearer("emb"))
    assert allowed.status_code == 200
    for model in ("mini", "nope"):  # an alias it may not use, and one that does not exist: same answer
        denied = http.post("/v1/embeddings", json={"model": model, "input": "x"}, headers=bearer("emb"))
        assert denied.status_code == 403, model
        error = denied.json()["error"]
        assert set(error) == ERROR_FIELDS
        assert (error["type"], error["param"]) == ("permission_error", "model")
        assert "'emb'" in error["message"] and "emb-*" in error["message"]
        assert KEYS["emb"] not in denied.text
    assert http.post("/v1/embeddings", json={"model": "mini", "input": "x"}, headers=bearer("full")).status_code == 200


@pytest.mark.parametrize(
    ("key", "aliases"),
    [("full", {"mini", "emb-a", "emb-b"}), ("emb", {"emb-a", "emb-b"}), ("limited", {"mini"})],
)
def test_models_lists_only_the_aliases_a_key_may_use(http: httpx.Client, key: str, aliases: set[str]) -> None:
    response = http.get("/v1/models", headers=bearer(key))
    assert response.status_code == 200
    assert {entry["id"] for entry in response.json()["data"]} == aliases


def burst(http: httpx.Client, key: str, body: dict[str, Any], tries: int) -> tuple[list[httpx.Response], httpx.Response]:
    """Requests until the first 429 (at most ``tries``): the admitted ones and the refusal."""
    admitted: list[httpx.Response] = []
    for _ in range(tries):
        response = http.post("/v1/embeddings", json=body, headers=bearer(key))
        if response.status_code == 429:
            return admitted, response
        assert response.status_code == 200, response.text
        admitted.append(response)
    pytest.fail(f"no 429 after {tries} requests with key {key!r}")


def check_refusal(refused: httpx.Response) -> None:
    assert int(refused.headers["retry-after"]) >= 1
    assert int(refused.headers["retry-after-ms"]) >= 1
    error = refused.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


def test_rpm_limit_gives_429_with_openai_headers(http: httpx.Client) -> None:
    admitted, refused = burst(http, "limited", {"model": "mini", "input": "a few words"}, tries=10)
    assert len(admitted) >= 3  # the bucket starts with a minute's allowance
    remaining = []
    for response in admitted:
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
        assert response.headers["x-ratelimit-reset-requests"]
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
        assert 0 <= int(response.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert all(0 <= r <= 2 for r in remaining)
    check_refusal(refused)
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-limit-tokens"] == "100000"
    assert "3 requests per minute" in refused.json()["error"]["message"]
    # The key's limit is its own: another key is not refused.
    assert http.post("/v1/embeddings", json={"model": "mini", "input": "x"}, headers=bearer("full")).status_code == 200


def test_tpm_limit_counts_tokens_before_serving(http: httpx.Client) -> None:
    body = {"model": "mini", "input": "one two three four five six seven eight nine ten"}
    admitted, refused = burst(http, "tokens", body, tries=10)
    assert admitted, "the first request fits in a full bucket"
    tokens = admitted[0].json()["usage"]["prompt_tokens"]
    assert len(admitted) >= 40 // tokens
    for response in admitted:
        assert response.headers["x-ratelimit-limit-tokens"] == "40"
        assert int(response.headers["x-ratelimit-remaining-tokens"]) <= 40 - tokens
        assert "x-ratelimit-limit-requests" not in response.headers  # this key has no rpm
    check_refusal(refused)
    assert refused.headers["x-ratelimit-limit-tokens"] == "40"
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) < tokens
    assert "40 tokens per minute" in refused.json()["error"]["message"]
    # A request larger than a minute's allowance can never pass, and says so.
    huge = http.post("/v1/embeddings", json={"model": "mini", "input": "word " * 100}, headers=bearer("tokens"))
    assert huge.status_code == 429
    assert huge.json()["error"]["param"] == "input"
    assert "can never be admitted" in huge.json()["error"]["message"]


def test_the_openai_sdk_with_a_gateway_key(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEYS["full"], max_retries=0)
    result = client.embeddings.create(model="mini", input=["first", "second"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 384
    assert result.usage.prompt_tokens > 0

    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=f"{base_url}/v1", api_key=WRONG, max_retries=0).embeddings.create(model="mini", input="x")
    assert wrong.value.status_code == 401
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEYS["emb"], max_retries=0).embeddings.create(model="mini", input="x")

    tiny = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEYS["sdk-tiny"], max_retries=0)
    tiny.embeddings.create(model="mini", input="x")
    with pytest.raises(openai.RateLimitError) as limited:
        for _ in range(5):
            tiny.embeddings.create(model="mini", input="x")
    assert int(limited.value.response.headers["retry-after"]) >= 1
