"""The shortcuts that are plain CPU work, each against the plain way (see bench/shortcuts.py).

Where the plain way is a branch the gateway's function skips (a single-item guard), the
general path is copied here from that function; keep it in step when the function changes.
"""

from __future__ import annotations

import base64
import dataclasses
import types
import uuid
from typing import Any
from unittest import mock

import httpx
import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bench.shortcuts import Case, run_loop
from gateway.config.settings import parse_config
from gateway.encoding import encode_rows
from gateway.http import dispatch
from gateway.http.call import ApiCall
from gateway.http.responses import JSONBytesResponse, served_headers
from gateway.record import Attempted, BatchTrace, RequestRecord, RequestTrace, Served
from gateway.routing.router import Router
from gateway.runtime import build_runtime
from gateway.usage import metrics as metrics_module
from gateway.usage.ledger import UsageRecord
from providers.upstream import wire
from providers.upstream.client import UpstreamClient

__all__ = ["cases", "upstream_config"]

DIMS = 1024
TEXT = "the quick brown fox jumps over the lazy dog"
BODY = {"model": "fake-embed", "input": [TEXT], "encoding_format": "base64"}


def upstream_config(base_url: str) -> dict[str, Any]:
    """An alias of two OpenAI-style deployments in fallback, and one of a single deployment."""
    def deployment(name: str) -> dict[str, Any]:
        return {"name": name, "provider": "openai", "base_url": base_url, "model": "fake-embed",
                "api_key": "sk-bench", "dimensions": DIMS}

    return {"models": {
        "pair": {"routing": "fallback", "deployments": [deployment("a"), deployment("b")]},
        "single": {"deployments": [deployment("one")]},
    }}


def _served() -> Served:
    return Served(
        alias="single", vectors=[], prompt_tokens=9, tokens_estimated=False, cost_usd=1.8e-7,
        deployment="one", provider="openai", upstream_model="fake-embed", attempts=1, fallbacks=0, inputs=1,
    )


def metrics_case() -> Case:
    real = metrics_module.Metrics(aliases=["single"])

    class PlainMetrics:
        """The same series as prometheus_client's own Counter and Histogram."""

        def __init__(self) -> None:
            registry = CollectorRegistry()
            self.aliases = frozenset(["single"])
            self.requests = Counter("gateway_requests", "r", ["alias", "deployment", "status"], registry=registry)
            self.tokens = Counter("gateway_tokens", "t", ["alias", "deployment"], registry=registry)
            self.cost = Counter("gateway_cost_usd", "c", ["alias", "deployment"], registry=registry)
            self.seconds = Histogram("gateway_request_seconds", "s", ["alias"], registry=registry,
                                     buckets=metrics_module.REQUEST_BUCKETS)
            self.attempts = Histogram("gateway_upstream_attempt_seconds", "a", ["deployment", "outcome"],
                                      registry=registry, buckets=metrics_module.REQUEST_BUCKETS)

        def observe(self, alias: str, deployment: str, status: int, seconds: float, tokens: int, cost: float) -> None:
            alias = alias if alias in self.aliases else metrics_module.OTHER_ALIAS
            self.requests.labels(alias, deployment, str(status)).inc()
            self.seconds.labels(alias).observe(seconds)
            self.tokens.labels(alias, deployment).inc(tokens)
            self.cost.labels(alias, deployment).inc(cost)

    plain = PlainMetrics()

    def plain_request() -> None:
        plain.observe("single", "one", 200, 0.012, 9, 1.8e-7)
        plain.attempts.labels("one", "ok").observe(0.01)

    def real_request() -> None:
        real.observe_request(alias="single", deployment="one", status=200, seconds=0.012, tokens=9, cost_usd=1.8e-7)
        real.observe_attempt(deployment="one", outcome="ok", seconds=0.01)

    return Case("metrics per request", "gateway/usage/metrics.py Metrics",
                run_loop(plain_request), run_loop(real_request), "request")


def request_build_cases(client: UpstreamClient) -> list[Case]:
    """As ``UpstreamClient.post_json`` builds its request, against httpx's usual ways."""
    timeouts = {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    url = client.base_url + "/embeddings"

    def headers() -> httpx.Headers:
        copy = httpx.Headers(client._headers)
        copy["x-request-id"] = "4f3a9c2b7d1e000000000001"
        return copy

    def as_gateway() -> None:
        httpx.Request("POST", client._url("/embeddings"), headers=headers(),
                      stream=httpx.ByteStream(orjson.dumps(BODY)), extensions={"timeout": timeouts}).read()

    def with_json() -> None:
        httpx.Request("POST", url, json=BODY, headers=headers(), extensions={"timeout": timeouts})

    def with_content() -> None:
        httpx.Request("POST", client._url("/embeddings"), content=orjson.dumps(BODY), headers=headers(),
                      extensions={"timeout": timeouts})

    return [
        Case("request: ByteStream vs json=", "providers/upstream/client.py post_json",
             run_loop(with_json), run_loop(as_gateway), "request"),
        Case("request: ByteStream vs content=", "providers/upstream/client.py post_json",
             run_loop(with_content), run_loop(as_gateway), "request"),
        Case("request: URL cached per path", "providers/upstream/client.py UpstreamClient._url",
             run_loop(lambda: httpx.URL(client.base_url + "/embeddings")),
             run_loop(lambda: client._url("/embeddings")), "request"),
    ]


def base64_cases() -> list[Case]:
    """The real decode and encode, with pybase64 swapped for the standard library's base64."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((32, DIMS)).astype(np.float32)
    rows = [base64.b64encode(row.tobytes()).decode() for row in vectors]
    stdlib = types.SimpleNamespace(b64decode=base64.b64decode, b64encode=base64.b64encode)

    def decoding(patched: bool) -> Any:
        decode = run_loop(lambda: wire.decode_rows(rows, "float", width=DIMS, where="bench"))
        if not patched:
            return decode

        def run(n: int) -> float:
            with mock.patch.object(wire, "pybase64", stdlib):
                return decode(n)
        return run

    def encoding(patched: bool) -> Any:
        from gateway import encoding as encoding_module

        encode = run_loop(lambda: encode_rows(vectors, "base64"))
        if not patched:
            return encode

        def run(n: int) -> float:
            with mock.patch.object(encoding_module, "pybase64", stdlib):
                return encode(n)
        return run

    return [
        Case("pybase64 decode, 32x1024", "providers/upstream/wire.py decode_rows",
             decoding(True), decoding(False), "32 rows"),
        Case("pybase64 encode, 32x1024", "gateway/encoding.py encode_rows",
             encoding(True), encoding(False), "32 rows"),
    ]


def _frozen_twin(cls: type, *, kw_only: bool) -> Any:
    """``cls`` with the same fields, as a frozen dataclass."""
    spec: list[Any] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            spec.append((f.name, f.type, dataclasses.field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            spec.append((f.name, f.type, dataclasses.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, f.type))
    return dataclasses.make_dataclass(cls.__name__ + "Frozen", spec, frozen=True, slots=True, kw_only=kw_only)


def dataclass_cases() -> list[Case]:
    kinds: list[type] = [Attempted, BatchTrace, RequestTrace, Served, RequestRecord]
    twins: dict[type, Any] = {cls: _frozen_twin(cls, kw_only=cls in (Served, RequestRecord)) for cls in kinds}
    served = dataclasses.asdict(_served())

    def build(kinds: dict[type, Any]) -> None:
        attempt = kinds[Attempted]("one", "openai", "ok")
        kinds[BatchTrace](0, 1, [attempt])
        kinds[RequestTrace]()
        kinds[Served](**served)
        kinds[RequestRecord](request_id="4f3a9c2b7d1e000000000001", method="POST", path="/v1/embeddings")

    real: dict[type, Any] = {cls: cls for cls in kinds}
    usage_twin = dataclasses.make_dataclass(
        "UsageRow", [(name, UsageRecord.__annotations__[name]) for name in UsageRecord._fields],
        frozen=True, slots=True,
    )
    row = (1.7e9, "4f3a9c2b7d1e000000000001", None, "single", "one", "openai", "fake-embed", 1, 9, 9, 1.8e-7,
           200, 12.5, 1, 0, 0, None, None, None)
    return [
        Case("slotted unfrozen records", "gateway/record.py Served, RequestRecord, ...",
             run_loop(lambda: build(twins)), run_loop(lambda: build(real)), "request"),
        Case("UsageRecord as NamedTuple", "gateway/usage/ledger.py UsageRecord",
             run_loop(lambda: usage_twin(*row)), run_loop(lambda: UsageRecord(*row)), "row"),
    ]


def response_cases() -> list[Case]:
    vector = np.random.default_rng(3).standard_normal(DIMS).astype(np.float32)
    content = {"object": "list", "model": "single",
               "data": [{"object": "embedding", "index": 0, "embedding": base64.b64encode(vector.tobytes()).decode()}],
               "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    served = _served()
    options = orjson.OPT_SERIALIZE_NUMPY

    def as_gateway() -> object:
        return JSONBytesResponse(orjson.dumps(content, option=options), raw_headers=served_headers(served)).raw_headers

    def header_dict() -> dict[str, str]:
        return {"x-gateway-deployment": served.deployment, "x-gateway-provider": served.provider,
                "x-gateway-attempts": str(served.attempts)}

    return [
        Case("answer: bytes+raw headers vs JSONResponse", "gateway/http/responses.py JSONBytesResponse",
             run_loop(lambda: JSONResponse(content, headers=header_dict()).raw_headers),
             run_loop(as_gateway), "answer"),
        Case("answer: raw headers vs Response(headers=)", "gateway/http/responses.py JSONBytesResponse",
             run_loop(lambda: Response(orjson.dumps(content, option=options), media_type="application/json",
                                       headers=header_dict()).raw_headers),
             run_loop(as_gateway), "answer"),
    ]


def runtime_cases() -> list[Case]:
    runtime = build_runtime(parse_config(upstream_config("http://127.0.0.1:9/v1"), {}))
    pair, single = runtime.aliases["pair"], runtime.aliases["single"]
    router = Router()
    return [
        Case("alias limits derived once", "gateway/runtime.py AliasRuntime.limits",
             run_loop(pair._derive), run_loop(pair.limits), "request"),
        Case("router: one deployment, no order()", "gateway/routing/router.py _Attempts.run",
             run_loop(lambda: router.order(single, None)),
             run_loop(lambda: single.deployments), "request"),
    ]


def request_id_case() -> Case:
    return Case("request id from a counter", "gateway/http/dispatch.py _new_request_id",
                run_loop(lambda: uuid.uuid4().hex), run_loop(dispatch._new_request_id), "request")


def float_rows_case() -> Case:
    vectors = np.random.default_rng(5).standard_normal((1, DIMS)).astype(np.float32)
    options = orjson.OPT_SERIALIZE_NUMPY

    def as_gateway() -> None:
        orjson.dumps([{"embedding": row} for row in encode_rows(vectors, "float")], option=options)

    return Case("float answer: numpy rows to orjson", "gateway/encoding.py encode_rows",
                run_loop(lambda: orjson.dumps([{"embedding": row} for row in vectors.tolist()])),
                run_loop(as_gateway), "1x1024 answer")


def header_case() -> Case:
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "query_string": b"", "headers": [
        (b"host", b"127.0.0.1:8080"), (b"user-agent", b"OpenAI/Python 1.40.0"), (b"accept", b"application/json"),
        (b"authorization", b"Bearer sk-bench"), (b"content-type", b"application/json"),
        (b"content-length", b"92"),
    ]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    record = RequestRecord(request_id="4f3a9c2b7d1e000000000001", method="POST", path="/v1/embeddings")

    def as_gateway() -> object:
        call = ApiCall(scope, receive, record)
        return call.header(b"content-type"), call.header(b"content-length"), call.header(b"authorization")

    def with_request() -> object:
        headers = Request(scope, receive).headers
        return headers.get("content-type"), headers.get("content-length"), headers.get("authorization")

    return Case("headers via ApiCall, not Request", "gateway/http/call.py ApiCall",
                run_loop(with_request), run_loop(as_gateway), "request")


def _ordered_items_general(data: Any, expected: int) -> list[dict[str, Any]]:
    """``wire.ordered_items`` without its one-item branch (its general path, as written there)."""
    where, what = "bench", "data"
    if not isinstance(data, list):
        raise wire.malformed(where, f"{what} is missing or not a list")
    if len(data) != expected:
        raise wire.malformed(where, f"{what} holds {len(data)} items, expected {expected}")
    slots: list[dict[str, Any] | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise wire.malformed(where, f"{what}[{position}] is not an object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise wire.malformed(where, f"{what}[{position}] has no integer index")
        if not 0 <= index < expected:
            raise wire.malformed(where, f"{what}[{position}] has index {index}, outside 0..{expected - 1}")
        if slots[index] is not None:
            raise wire.malformed(where, f"{what} repeats index {index}")
        slots[index] = item
    return [item for item in slots if item is not None]


def single_item_cases() -> list[Case]:
    data = [{"object": "embedding", "index": 0, "embedding": "AAAA"}]
    return [
        Case("one-item branch: ordered_items", "providers/upstream/wire.py ordered_items",
             run_loop(lambda: _ordered_items_general(data, 1)),
             run_loop(lambda: wire.ordered_items(data, 1, where="bench")), "answer"),
    ]


def cases() -> list[Case]:
    client = UpstreamClient(deployment="one", base_url="http://127.0.0.1:9/v1", api_key="sk-bench", headers={},
                            timeout_s=30.0, connect_timeout_s=5.0)
    return [
        metrics_case(), *request_build_cases(client), *base64_cases(), *dataclass_cases(), *response_cases(),
        *runtime_cases(), request_id_case(), float_rows_case(), header_case(), *single_item_cases(),
    ]

