"""One front door: every route from one table, errors answered in one place, and the
request record that tells, per batch, how many attempts a request made and where."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.server import RunningServer, run_in_thread
from gateway.config import KeyConfig
from gateway.http.call import ApiCall
from gateway.http.routes import Route, RouteTable
from gateway.record import RequestRecord
from gateway.routing.router import Router
from gateway.runtime import build_runtime
from gateway.schema import parse_embeddings_request
from gateway.service import EmbeddingService
from providers.base import InvalidInput

Server = RunningServer[OpenAIUpstream]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _ok(call: ApiCall) -> Response:
    return Response(call.path_params.get("id", "plain"))


def test_the_route_table_matches_exact_and_templated_paths() -> None:
    table = RouteTable([
        Route("GET", "/v1/models", _ok),
        Route("GET", "/v1/models/{id}", _ok),
        Route("POST", "/v1/embeddings", _ok, billed=True),
    ])
    exact = table.match("GET", "/v1/models")
    assert exact is not None and exact.route is not None and exact.params == {}
    templated = table.match("GET", "/v1/models/local-minilm")
    assert templated is not None and templated.route is not None
    assert templated.params == {"id": "local-minilm"}
    assert table.match("GET", "/v1/models/a/b") is None
    assert table.match("GET", "/v1/models/") is None
    wrong_method = table.match("GET", "/v1/embeddings")
    assert wrong_method is not None and wrong_method.route is None and wrong_method.allowed == ("POST",)
    billed = table.match("POST", "/v1/embeddings")
    assert billed is not None and billed.route is not None and billed.route.billed
    assert table.match("GET", "/nowhere") is None


def test_unknown_routes_and_methods_are_answered_in_openai_shape(client: httpx.Client) -> None:
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/embeddings")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["x-request-id"]
    head = client.head("/healthz")
    assert head.status_code == 200


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with run_in_thread(OpenAIUpstream()) as server:
        yield server


def _service(upstream: Server, **alias: Any) -> EmbeddingService:
    models = {
        "fam": {
            "retries": 2,
            **alias,
            "deployments": [
                {"name": "only", "provider": "openai", "base_url": f"{upstream.base_url}/v1", "model": "fake-minilm",
                 "dimensions": 384, "max_inputs": 2},
            ],
        }
    }
    runtime = build_runtime(make_config(models))
    return EmbeddingService(runtime, Router(sleep=lambda _: asyncio.sleep(0)))


@pytest.mark.anyio
async def test_the_record_says_how_many_attempts_each_batch_made(upstream: Server) -> None:
    upstream.app.reset()
    service = _service(upstream)
    await service.runtime.start()
    try:
        # Three batches of two; the fake fails the first two calls it gets with a 500.
        upstream.app.faults.add("status", times=2, status=500)
        record = RequestRecord(request_id="r1", method="POST", path="/v1/embeddings")
        request = parse_embeddings_request({"model": "fam", "input": [f"text {i}" for i in range(6)]})
        served = await service.embed(request, record=record)
    finally:
        await service.runtime.aclose()
    assert record.trace is not None
    spans = sorted((b.start, b.stop) for b in record.trace.batches)
    assert spans == [(0, 2), (2, 4), (4, 6)]
    attempts = sorted(len(b.attempts) for b in record.trace.batches)
    assert sum(attempts) == 5 == served.attempts == record.trace.attempts
    outcomes = [a.outcome for b in record.trace.batches for a in b.attempts]
    assert outcomes.count("bad_response") == 2 and outcomes.count("ok") == 3
    assert record.trace.deployments == ["only"] and record.trace.providers == ["openai"]


@pytest.mark.anyio
async def test_an_input_error_names_the_clients_position_not_the_batchs() -> None:
    models = {"mini": {"deployments": [
        {"provider": "onnx", "model": "all-MiniLM-L6-v2", "truncate": False, "max_inputs": 2}]}}
    service = EmbeddingService(build_runtime(make_config(models)), Router())
    await service.runtime.start()
    try:
        texts = ["short"] * 6
        texts[5] = "word " * 400  # over 256 tokens: input[1] of the third batch of two
        record = RequestRecord(request_id="r2", method="POST", path="/v1/embeddings")
        with pytest.raises(InvalidInput) as refused:
            await service.embed(parse_embeddings_request({"model": "mini", "input": texts}), record=record)
    finally:
        await service.runtime.aclose()
    assert refused.value.param == "input[5]"
    assert refused.value.message.startswith("input[5] has more than 256 tokens")
    assert len(record.trace.batches) == 3 if record.trace else False


@pytest.mark.anyio
async def test_rate_limits_are_charged_the_count_the_service_made_once(upstream: Server) -> None:
    upstream.app.reset()
    service = _service(upstream)
    key = KeyConfig(id="k", key="secret", models=("*",), rpm=None, tpm=1000)
    await service.runtime.start()
    try:
        record = RequestRecord(request_id="r4", method="POST", path="/v1/embeddings")
        request = parse_embeddings_request({"model": "fam", "input": ["one two three", "four"]})
        await service.embed(request, record=record, key=key)
    finally:
        await service.runtime.aclose()
    assert record.rate_headers is not None
    assert record.rate_headers["x-ratelimit-limit-tokens"] == "1000"
    remaining = int(record.rate_headers["x-ratelimit-remaining-tokens"])
    assert 0 < remaining < 1000
