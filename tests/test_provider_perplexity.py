"""The Perplexity provider, over real HTTP to the fake upstream on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import binary_of, contextual_vector, fake_matrix, fake_token_count, int8_of
from providers.base import (
    DeploymentSpec,
    EmbedOptions,
    InvalidInput,
    ProviderError,
    ProviderTimeout,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamResponseError,
)
from providers.base import UpstreamRateLimited
from providers.upstream.perplexity import PerplexityProvider

KEY = "pplx-secret-0123456789"
PPLX = "pplx-embed-v1-0.6b"
PPLX_4B = "pplx-embed-v1-4b"
CTX = "pplx-embed-context-v1-0.6b"
EMB_PATH = "/v1/embeddings"
CTX_PATH = "/v1/contextualizedembeddings"
DOCS = [["intro text", "more words here"], ["solo"], ["a", "b", "c"]]
Server = RunningServer[PerplexityUpstream]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def module_server() -> Iterator[Server]:
    with run_in_thread(PerplexityUpstream(api_key=KEY)) as server:
        yield server


@pytest.fixture
def server(module_server: Server) -> Server:
    module_server.app.reset()
    return module_server


def spec(base_url: str, *, model: str = PPLX, api_key: str = KEY, **options: Any) -> DeploymentSpec:
    return DeploymentSpec(
        name="pplx", model=model, base_url=base_url, api_key=api_key, timeout_s=5.0,
        connect_timeout_s=2.0, options=options,
    )


@asynccontextmanager
async def started(server: Server, **settings: Any) -> AsyncIterator[PerplexityProvider]:
    provider = PerplexityProvider(spec(server.base_url, **settings))
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def tokens(texts: list[str]) -> int:
    return sum(fake_token_count(t) for t in texts)


# -- /v1/embeddings ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_int8_vectors_usage_and_cost(server: Server) -> None:
    texts = ["hello world", "b", "third one here"]
    async with started(server) as provider:
        result = await provider.embed(texts, EmbedOptions(encoding="float"))
    assert result.encoding == "int8" and result.vectors.dtype == np.int8
    assert np.array_equal(result.vectors, int8_of(fake_matrix(texts, 1024)))
    assert result.dimensions == 1024
    assert result.prompt_tokens == tokens(texts) and not result.tokens_estimated
    assert result.cost_usd == pytest.approx(tokens(texts) * 0.004 / 1e6)
    assert result.token_counts == [4, 1, 5]
    seen = server.app.log.last
    assert seen.path == EMB_PATH and seen.header("authorization") == f"Bearer {KEY}"
    assert seen.json == {"model": PPLX, "input": texts, "encoding_format": "base64_int8"}


@pytest.mark.anyio
async def test_binary_and_dimensions_pass_through(server: Server) -> None:
    async with started(server, model=PPLX_4B) as provider:
        result = await provider.embed(["x y"], EmbedOptions(encoding="binary"))
        assert result.encoding == "binary" and result.vectors.dtype == np.uint8
        assert result.vectors.shape == (1, 320) and result.dimensions == 2560
        assert np.array_equal(result.vectors, binary_of(fake_matrix(["x y"], 2560)))
        small = await provider.embed(["x y"], EmbedOptions(dimensions=256, encoding="int8"))
        assert np.array_equal(small.vectors, int8_of(fake_matrix(["x y"], 256)))
        assert small.dimensions == 256
        assert server.app.log.last.json["dimensions"] == 256


@pytest.mark.anyio
async def test_extra_body_request_id_and_reserved_keys(server: Server) -> None:
    extra = {"model": "x", "input": ["y"], "encoding_format": "float", "dimensions": 5, "tag": "t"}
    async with started(server) as provider:
        await provider.embed(["a"], EmbedOptions(extra_body=extra, request_id="r-1", user="u"))
    seen = server.app.log.last
    assert seen.json == {"model": PPLX, "input": ["a"], "encoding_format": "base64_int8", "tag": "t"}
    assert seen.header("x-request-id") == "r-1"


@pytest.mark.anyio
async def test_token_ids_and_wrong_endpoint_are_refused_before_any_request(server: Server) -> None:
    async with started(server) as provider:
        with pytest.raises(InvalidInput, match="text only") as caught:
            await provider.embed(["a", [1, 2]], EmbedOptions())
        assert caught.value.param == "input[1]"
        with pytest.raises(InvalidInput, match="contextualized"):
            await provider.embed_contextualized([["a"]], EmbedOptions())
    async with started(server, model=CTX) as provider:
        with pytest.raises(InvalidInput, match="contextualizedembeddings"):
            await provider.embed(["a"], EmbedOptions())
    assert server.app.log.count == 0


@pytest.mark.anyio
async def test_usage_absent_is_estimated() -> None:
    with run_in_thread(PerplexityUpstream(include_usage=False)) as server:
        async with started(server) as provider:
            result = await provider.embed(["héllo wörld", "abc"], EmbedOptions())
    assert result.tokens_estimated and result.prompt_tokens == 6 and result.cost_usd is None


def test_capabilities() -> None:
    plain = PerplexityProvider(spec("http://x", model=PPLX_4B)).capabilities
    assert (plain.dimensions, plain.native_dimensions) == (2560, (128, 2560))
    assert (plain.max_inputs, plain.max_input_tokens, plain.max_request_tokens) == (512, 32_768, 120_000)
    assert plain.native_encodings == {"int8", "binary"} and not plain.token_ids
    assert not plain.contextualized and plain.accepted_options is None
    context = PerplexityProvider(spec("http://x", model=CTX)).capabilities
    assert context.contextualized and context.dimensions == 1024
    assert (context.max_documents, context.max_chunks) == (512, 16_000)
    future = PerplexityProvider(spec("http://x", model="pplx-embed-context-v2-8b", dimensions=4096))
    assert future.capabilities.contextualized and future.capabilities.dimensions == 4096
    assert KEY not in repr(future)


def test_check_settings() -> None:
    check = PerplexityProvider.check_settings
    assert check(model=PPLX, base_url=None, options={}) == []
    assert check(model=CTX, base_url="https://api.perplexity.ai/", options={"dimensions": 512}) == []
    assert check(model="pplx-embed-v2", base_url=None, options={"dimensions": 2048}) == []
    assert [k for k, _ in check(model="pplx-embed-v2", base_url=None, options={})] == ["model"]
    assert [k for k, _ in check(model=None, base_url=None, options={})] == ["model"]
    assert [k for k, _ in check(model=PPLX, base_url=None, options={"dimensions": 2048})] == ["dimensions"]
    problems = check(model=PPLX, base_url="https://api.perplexity.ai/v1", options={"max_connections": "8"})
    assert [k for k, _ in problems] == ["base_url", "max_connections"]


# -- /v1/contextualizedembeddings ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["int8", "binary"])
async def test_contextualized_rows_in_document_order(server: Server, encoding: Any) -> None:
    quantize = int8_of if encoding == "int8" else binary_of
    async with started(server, model=CTX) as provider:
        result = await provider.embed_contextualized(DOCS, EmbedOptions(encoding=encoding, dimensions=128))
    want = [quantize(contextual_vector(doc, c, 128)) for doc in DOCS for c in range(len(doc))]
    assert np.array_equal(result.vectors, np.stack(want))
    assert result.encoding == encoding and result.dimensions == 128
    assert len(result.token_counts) == len(DOCS)
    assert result.prompt_tokens == sum(tokens(doc) for doc in DOCS)
    assert result.cost_usd == pytest.approx(result.prompt_tokens * 0.004 / 1e6)
    seen = server.app.log.last
    assert seen.path == CTX_PATH and seen.json["input"] == DOCS


@pytest.mark.anyio
@pytest.mark.parametrize("level", ["chunks", "documents"])
async def test_contextualized_reordered_answers_are_put_back(server: Server, level: str) -> None:
    server.app.faults.add("reorder", level=level)
    async with started(server, model=CTX) as provider:
        result = await provider.embed_contextualized(DOCS, EmbedOptions())
    want = [int8_of(contextual_vector(doc, c, 1024)) for doc in DOCS for c in range(len(doc))]
    assert np.array_equal(result.vectors, np.stack(want))


CORRUPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong_count", {"level": "chunks"}, "chunks of document 2 holds 2 items"),
    ("wrong_count", {"level": "documents", "delta": 1}, "data holds 4 items"),
    ("bad_index", {"level": "chunks"}, "repeats index 0"),
    ("bad_index", {"level": "documents", "kind": "out_of_range"}, "index 3, outside"),
    ("wrong_dims", {}, "1023 dimensions, expected 1024"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "params", "problem"), CORRUPTIONS)
async def test_contextualized_corruptions_are_refused(
    server: Server, mode: str, params: dict[str, Any], problem: str
) -> None:
    server.app.faults.add(mode, **params)
    async with started(server, model=CTX) as provider:
        with pytest.raises(UpstreamResponseError, match=problem):
            await provider.embed_contextualized(DOCS, EmbedOptions())


# -- errors ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "params", "expected"),
    [
        ("status", {"status": 429, "retry_after": "1"}, UpstreamRateLimited),
        ("status", {"status": 500}, UpstreamResponseError),
        ("status", {"status": 504}, ProviderTimeout),
        ("drop", {"when": "reset"}, UpstreamConnectionError),
        ("invalid_json", {}, UpstreamResponseError),
        ("wrong_count", {}, UpstreamResponseError),
        ("bad_index", {}, UpstreamResponseError),
        ("wrong_dims", {}, UpstreamResponseError),
        ("hang", {}, ProviderTimeout),
    ],
)
@pytest.mark.parametrize("encoding", ["int8", "binary"])
async def test_faults_map_to_exceptions(
    server: Server, mode: str, params: dict[str, Any], expected: type[ProviderError], encoding: Any
) -> None:
    server.app.faults.add(mode, **params)
    async with started(server) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.embed(["a", "b"], EmbedOptions(encoding=encoding, timeout_s=0.3))
    assert type(caught.value) is expected, caught.value


@pytest.mark.anyio
async def test_validation_errors_and_the_key_never_shows(server: Server) -> None:
    async with started(server) as provider:
        with pytest.raises(InvalidInput) as caught:
            await provider.embed(["a"], EmbedOptions(dimensions=100))
        assert caught.value.param == "dimensions"
        assert "dimensions: Input should be greater than or equal to 128" in caught.value.message
        echo = {"detail": [{"loc": ["body", "input", 0], "msg": f"key {KEY} rejected", "type": "x"}]}
        server.app.faults.add("status", status=422, body=echo)
        server.app.faults.add("status", status=503, message=f"down for {KEY}")
        for expected in (InvalidInput, ProviderError):
            with pytest.raises(expected) as error:
                await provider.embed(["a"], EmbedOptions())
            assert KEY not in str(error.value) and "[redacted]" in error.value.message
    async with started(server, api_key="wrong-key") as provider:
        with pytest.raises(UpstreamAuthError):
            await provider.embed(["a"], EmbedOptions())
