"""The OpenAI-style provider, over real HTTP to the fake upstream on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from fakes.openai_upstream import OpenAIUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import fake_matrix, fake_token_count, fake_vector
from providers.base import (
    DeploymentSpec,
    EmbedOptions,
    InvalidInput,
    ProviderError,
    ProviderOverloaded,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamUnreachable,
    UpstreamResponseError,
)
from providers.base import UpstreamRateLimited
from providers.upstream.client import parse_retry_after
from providers.upstream.openai import OpenAIProvider

KEY = "sk-test-0123456789abcdef"
MINI = "fake-minilm"
Server = RunningServer[OpenAIUpstream]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def module_server() -> Iterator[Server]:
    with run_in_thread(OpenAIUpstream(api_key=KEY)) as server:
        yield server


@pytest.fixture
def server(module_server: Server) -> Server:
    module_server.app.reset()
    return module_server


def spec(base_url: str, *, model: str = MINI, api_key: str | None = KEY, **options: Any) -> DeploymentSpec:
    headers = options.pop("headers", {})
    timeout_s = options.pop("timeout_s", 5.0)
    return DeploymentSpec(
        name="oai", model=model, base_url=base_url, api_key=api_key, headers=headers,
        timeout_s=timeout_s, connect_timeout_s=2.0, options=options,
    )


@asynccontextmanager
async def started(server: Server, **settings: Any) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(spec(server.base_url + "/v1", **settings))
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def mocked(answer: Any, *, model: str = MINI, **options: Any) -> OpenAIProvider:
    """A provider whose upstream answers ``answer`` (a payload, or a function of the body)."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        payload = answer(body) if callable(answer) else answer
        return httpx.Response(200, content=orjson.dumps(payload))

    return OpenAIProvider(spec("http://upstream.test/v1", model=model, **options), transport=httpx.MockTransport(handle))


def floats(*rows: list[Any]) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return {"object": "list", "data": data, "model": MINI}


# -- vectors, body, headers -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["base64", "float"])
async def test_vectors_for_texts_and_token_ids(server: Server, encoding: str) -> None:
    async with started(server, encoding=encoding) as provider:
        assert provider.capabilities.dimensions == 0
        for inputs in (["hello world", "second text", "x"], [[1, 2, 3], [7]]):
            result = await provider.embed(inputs, EmbedOptions())
            assert result.vectors.dtype == np.float32 and result.encoding == "float"
            assert np.allclose(result.vectors, fake_matrix(inputs, 384), atol=1e-6)
            assert result.dimensions == 384
            assert result.prompt_tokens == sum(fake_token_count(i) for i in inputs)
            assert not result.tokens_estimated and result.cost_usd is None
            assert server.app.log.last.json["encoding_format"] == encoding
        assert result.token_counts == []  # the upstream reported the total; nothing was estimated
        assert provider.capabilities.dimensions == 384


@pytest.mark.anyio
async def test_answers_in_any_order_are_put_in_input_order(server: Server) -> None:
    server.app.faults.add("reorder")
    async with started(server) as provider:
        result = await provider.embed(["a", "b", "c"], EmbedOptions())
    assert np.allclose(result.vectors, fake_matrix(["a", "b", "c"], 384), atol=1e-6)


@pytest.mark.anyio
async def test_body_headers_and_extra_body(server: Server) -> None:
    async with started(server, headers={"x-team": "search"}) as provider:
        extra = {"model": "other", "input": "other", "encoding_format": "float",
                 "dimensions": 3, "custom": {"a": 1}}
        options = EmbedOptions(user="u-1", request_id="req-9", extra_body=extra)
        result = await provider.embed(["a b"], options)
    assert np.allclose(result.vectors[0], fake_vector("a b", 384), atol=1e-6)
    seen = server.app.log.last
    assert seen.path == "/v1/embeddings"
    assert seen.json == {"model": MINI, "input": ["a b"], "encoding_format": "base64",
                         "user": "u-1", "custom": {"a": 1}}
    assert seen.header("authorization") == f"Bearer {KEY}"
    assert seen.header("x-request-id") == "req-9"
    assert seen.header("x-team") == "search"


@pytest.mark.anyio
async def test_send_user_false_and_no_request_id(server: Server) -> None:
    async with started(server, send_user=False) as provider:
        await provider.embed(["a"], EmbedOptions(user="u-1"))
    seen = server.app.log.last
    assert "user" not in seen.json and seen.header("x-request-id") is None


@pytest.mark.anyio
async def test_dimensions_are_forwarded_only_when_native(server: Server) -> None:
    async with started(server, native_dimensions=True) as provider:
        assert provider.capabilities.native_dimensions == (1, 65_536)
        result = await provider.embed(["a"], EmbedOptions(dimensions=100))
        assert server.app.log.last.json["dimensions"] == 100
        assert np.allclose(result.vectors[0], fake_vector("a", 100), atol=1e-6)
        await provider.embed(["a"], EmbedOptions())
        assert "dimensions" not in server.app.log.last.json
        assert provider.capabilities.native_dimensions == (1, 384)
    async with started(server) as provider:
        assert provider.capabilities.native_dimensions is None
        with pytest.raises(InvalidInput) as caught:
            await provider.embed(["a"], EmbedOptions(dimensions=100))
        assert caught.value.param == "dimensions"
    assert server.app.log.count == 2


def test_capabilities_and_defaults() -> None:
    small = OpenAIProvider(spec("http://x/v1", model="text-embedding-3-small"))
    caps = small.capabilities
    assert (caps.dimensions, caps.native_dimensions) == (1536, (1, 1536))
    assert (caps.max_inputs, caps.max_input_tokens, caps.max_request_tokens) == (2048, 8192, 300_000)
    assert caps.token_ids and caps.native_encodings == {"float"} and caps.accepted_options is None
    assert not caps.contextualized
    custom = OpenAIProvider(spec("http://x/v1", dimensions=256, dimensions_range=[64, 256]))
    assert custom.capabilities.dimensions == 256
    assert custom.capabilities.native_dimensions == (64, 256)
    assert small.count_tokens(["a"]) is None
    assert KEY not in repr(small)


def test_check_settings() -> None:
    check = OpenAIProvider.check_settings
    assert check(model="m", base_url=None, options={}) == []
    assert check(model="m", base_url="http://h:1/v1", options={"dimensions_range": [1, 8]}) == []
    problems = check(
        model=None,
        base_url="ftp://h",
        options={"encoding": "int8", "native_dimensions": "yes", "max_connections": 0,
                 "dimensions_range": [9, 3], "send_user": 1},
    )
    assert {key for key, _ in problems} == {
        "model", "base_url", "encoding", "native_dimensions", "max_connections",
        "dimensions_range", "send_user",
    }
    conflicting = {"dimensions_range": [1, 8], "native_dimensions": False}
    assert [k for k, _ in check(model="m", base_url=None, options=conflicting)] == ["dimensions_range"]
    too_wide = {"dimensions_range": [1, 800], "dimensions": 384}
    assert [k for k, _ in check(model="m", base_url=None, options=too_wide)] == ["dimensions_range"]


# -- usage and cost ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_usage_absent_is_estimated() -> None:
    with run_in_thread(OpenAIUpstream(include_usage=False)) as server:
        async with started(server) as provider:
            texts = ["héllo wörld", "abc"]
            result = await provider.embed(texts, EmbedOptions())
            assert result.tokens_estimated and result.token_counts == [5, 1]
            assert result.prompt_tokens == 6
            ids = await provider.embed([[1, 2, 3]], EmbedOptions())
            assert ids.prompt_tokens == 3 and not ids.tokens_estimated


@pytest.mark.anyio
async def test_cost_is_kept_when_the_upstream_reports_it() -> None:
    payload = floats([0.6, 0.8]) | {
        "usage": {"prompt_tokens": 4, "total_tokens": 4,
                  "cost": {"input_cost": 1e-6, "total_cost": 2e-6, "currency": "USD"}},
    }
    result = await mocked(payload).embed(["a"], EmbedOptions())
    assert result.cost_usd == 2e-6 and result.prompt_tokens == 4
    payload["usage"] = {"prompt_tokens": 4, "cost": 3e-6}
    assert (await mocked(payload).embed(["a"], EmbedOptions())).cost_usd == 3e-6


# -- errors ------------------------------------------------------------------------------

STATUS_CASES: list[tuple[int, type[ProviderError]]] = [
    (400, InvalidInput),
    (403, UpstreamAuthError),
    (404, UpstreamResponseError),
    (408, ProviderTimeout),
    (409, ProviderUnavailable),
    (413, InvalidInput),
    (422, InvalidInput),
    (429, UpstreamRateLimited),
    (500, UpstreamResponseError),
    (501, UpstreamResponseError),
    (502, ProviderUnavailable),
    (503, ProviderUnavailable),
    (504, ProviderTimeout),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "expected"), STATUS_CASES)
async def test_status_maps_to_exception_and_never_shows_the_key(
    server: Server, status: int, expected: type[ProviderError]
) -> None:
    server.app.faults.add("status", status=status, message=f"bad key {KEY}!", retry_after="2")
    async with started(server) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.embed(["a"], EmbedOptions())
    error = caught.value
    assert type(error) is expected
    assert getattr(error, "status", None) == status or isinstance(error, InvalidInput)
    for text in (str(error), repr(error), error.message, str(error.param)):
        assert KEY not in text
    if expected is not UpstreamAuthError:
        assert "[redacted]" in error.message
    if status in (429, 503):
        assert isinstance(error, ProviderUnavailable) and error.retry_after == 2.0


@pytest.mark.anyio
async def test_wrong_key_is_an_auth_error(server: Server) -> None:
    async with started(server, api_key="sk-wrong") as provider:
        with pytest.raises(UpstreamAuthError) as caught:
            await provider.embed(["a"], EmbedOptions())
    assert caught.value.status == 401 and "credentials" in caught.value.message


@pytest.mark.anyio
async def test_retry_after_ms_and_error_bodies(server: Server) -> None:
    faults = server.app.faults
    faults.add("status", status=429, retry_after_ms=1500)
    faults.add("status", status=422, body={"detail": [
        {"loc": ["body", "input", 1], "msg": f"too long for {KEY}", "type": "value_error"}]})
    faults.add("status", status=400, body={"error": "plain message"})
    async with started(server) as provider:
        with pytest.raises(UpstreamRateLimited) as limited:
            await provider.embed(["a"], EmbedOptions())
        assert limited.value.retry_after == 1.5
        with pytest.raises(InvalidInput) as detail:
            await provider.embed(["a"], EmbedOptions())
        assert detail.value.param == "input[1]"
        assert "input[1]: too long for [redacted]" in detail.value.message
        with pytest.raises(InvalidInput, match="plain message"):
            await provider.embed(["a"], EmbedOptions())


def test_parse_retry_after() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": "3", "retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    future = httpx.Headers({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert (parse_retry_after(future) or 0) > 1e9
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None


FAULT_CASES: list[tuple[str, dict[str, Any], type[ProviderError]]] = [
    ("drop", {"when": "before_response"}, UpstreamConnectionError),
    ("drop", {"when": "mid_body"}, UpstreamConnectionError),
    ("drop", {"when": "reset"}, UpstreamConnectionError),
    ("invalid_json", {}, UpstreamResponseError),
    ("wrong_count", {}, UpstreamResponseError),
    ("wrong_count", {"delta": 1}, UpstreamResponseError),
    ("wrong_dims", {}, UpstreamResponseError),
    ("nan", {}, UpstreamResponseError),
    ("bad_index", {}, UpstreamResponseError),
    ("bad_index", {"kind": "out_of_range"}, UpstreamResponseError),
    ("hang", {}, ProviderTimeout),
]


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["base64", "float"])
@pytest.mark.parametrize(("mode", "params", "expected"), FAULT_CASES)
async def test_faults_map_to_exceptions(
    server: Server, encoding: str, mode: str, params: dict[str, Any], expected: type[ProviderError]
) -> None:
    server.app.faults.add(mode, **params)
    async with started(server, encoding=encoding, dimensions=384) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.embed(["a", "b", "c"], EmbedOptions(timeout_s=0.3))
        assert type(caught.value) is expected, caught.value
        assert KEY not in str(caught.value)
        result = await provider.embed(["a"], EmbedOptions())
        assert np.allclose(result.vectors[0], fake_vector("a", 384), atol=1e-6)


@pytest.mark.anyio
async def test_unreachable_upstream_and_lifecycle() -> None:
    provider = OpenAIProvider(spec("http://127.0.0.1:9/v1"))
    with pytest.raises(ProviderUnavailable, match="not started"):
        await provider.embed(["a"], EmbedOptions())
    await provider.start()
    with pytest.raises(UpstreamUnreachable):
        await provider.embed(["a"], EmbedOptions())
    await provider.aclose()
    with pytest.raises(ProviderUnavailable):
        await provider.embed(["a"], EmbedOptions())
    with pytest.raises(InvalidInput):
        await provider.embed_contextualized([["a"]], EmbedOptions())


@pytest.mark.anyio
async def test_a_full_pool_is_overload(server: Server) -> None:
    server.app.faults.add("hang")
    async with started(server, max_connections=1) as provider:
        stuck = asyncio.ensure_future(provider.embed(["a"], EmbedOptions(timeout_s=0.4)))
        while not server.app.log.in_flight:
            await asyncio.sleep(0.005)
        with pytest.raises(ProviderOverloaded):
            await provider.embed(["b"], EmbedOptions(timeout_s=0.05))
        with pytest.raises(ProviderTimeout):
            await stuck


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1, 2], "not an object"),
        ({"data": "x"}, "not a list"),
        (floats([1.0, "a"]), "not numbers"),
        (floats([1.0, 2.0], [1.0]), "embedding 1 has 1 values"),
        (floats([[1.0], [2.0]]), "not flat"),
        (floats([1e39, 1.0]), "NaN or infinity"),
        (floats([]), "empty"),
        ({"data": [{"index": 0, "embedding": "!!"}]}, "not valid base64"),
        ({"data": [{"index": 0, "embedding": "AAA="}]}, "not whole float32"),
        ({"data": [{"embedding": [1.0]}]}, "no integer index"),
        ({"data": [{"index": True, "embedding": [1.0]}]}, "no integer index"),
    ],
)
async def test_malformed_answers_are_refused(payload: Any, problem: str) -> None:
    data = payload.get("data") if isinstance(payload, dict) else None
    inputs = ["a"] * (len(data) if isinstance(data, list) else 1)
    with pytest.raises(UpstreamResponseError, match=problem):
        await mocked(payload).embed(inputs, EmbedOptions())


@pytest.mark.anyio
async def test_width_must_match_config_request_and_earlier_answers() -> None:
    narrow = mocked(floats([0.6, 0.8]), dimensions=3)
    with pytest.raises(UpstreamResponseError, match="configured for 3"):
        await narrow.embed(["a"], EmbedOptions())
    widths = iter([2, 3])
    changing = mocked(lambda body: floats([1.0] + [0.0] * (next(widths) - 1)))
    assert (await changing.embed(["a"], EmbedOptions())).dimensions == 2
    assert changing.capabilities.dimensions == 2
    with pytest.raises(UpstreamResponseError, match="expected 2"):
        await changing.embed(["a"], EmbedOptions())
    ignored = mocked(floats([0.6, 0.8]), native_dimensions=True)
    with pytest.raises(UpstreamResponseError, match="expected 1"):
        await ignored.embed(["a"], EmbedOptions(dimensions=1))


@pytest.mark.anyio
async def test_configured_headers_replace_ours_case_insensitively(server: Server) -> None:
    async with started(server, api_key=None, headers={"Authorization": f"Bearer {KEY}"}) as provider:
        await provider.embed(["a"], EmbedOptions(request_id="näive-id"))
    seen = server.app.log.last
    assert seen.header("authorization") == f"Bearer {KEY}" and seen.header("x-request-id") is None

