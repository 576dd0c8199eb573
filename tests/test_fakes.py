"""Tests of the fake upstream servers themselves, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from fakes.faults import Fault
from fakes.openai_upstream import OpenAIUpstream
from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import RunningServer, run_async, run_in_thread
from fakes.vectors import (
    binary_of,
    contextual_matrix,
    contextual_vector,
    fake_matrix,
    fake_token_count,
    fake_vector,
    int8_of,
)

KEY = "sk-test"
EMB = "/v1/embeddings"
CTX = "/v1/contextualizedembeddings"
MINI = "fake-minilm"
PPLX = "pplx-embed-v1-0.6b"
PPLX_CTX = "pplx-embed-context-v1-0.6b"
OAIServer = RunningServer[OpenAIUpstream]
PplxServer = RunningServer[PerplexityUpstream]


@pytest.fixture(scope="module")
def oai_server() -> Iterator[OAIServer]:
    with run_in_thread(OpenAIUpstream(api_key=KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def pplx_server() -> Iterator[PplxServer]:
    with run_in_thread(PerplexityUpstream(api_key=KEY)) as server:
        yield server


@pytest.fixture
def oai(oai_server: OAIServer) -> Iterator[httpx.Client]:
    oai_server.app.reset()
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=oai_server.base_url, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def pplx(pplx_server: PplxServer) -> Iterator[httpx.Client]:
    pplx_server.app.reset()
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=pplx_server.base_url, headers=headers, timeout=5) as client:
        yield client


def embed(client: httpx.Client, input: Any = "hello world", **body: Any) -> httpx.Response:
    return client.post(EMB, json={"model": MINI, "input": input, **body})


def b64(data: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype=dtype)


def words(n: int) -> str:
    return " ".join(["w"] * n)


# -- vectors -----------------------------------------------------------------------


def test_vectors_are_deterministic_normalised_and_matryoshka() -> None:
    full = fake_vector("hello", 1024)
    assert full.dtype == np.float32 and full.shape == (1024,)
    assert np.array_equal(full, fake_vector("hello", 1024))
    assert abs(np.linalg.norm(full) - 1) < 1e-5
    short = full[:256] / np.linalg.norm(full[:256])
    assert np.allclose(fake_vector("hello", 256), short, atol=1e-6)
    assert abs(float(fake_vector("hello", 64) @ fake_vector("other", 64))) < 0.6
    assert not np.allclose(fake_vector([1, 2], 64), fake_vector("1 2", 64))
    assert not np.allclose(fake_vector("hello", 64), fake_vector("hello", 64, salt="b"))
    assert np.array_equal(fake_matrix(["a", [3, 4]], 3000)[1], fake_vector([3, 4], 3000))


def test_token_counts_and_encodings() -> None:
    assert fake_token_count("a b  c\n") == 3
    assert fake_token_count(" ") == 1
    assert fake_token_count([5, 6]) == 2
    v = np.array([0.5, -0.25, 0.0, 0.1, -0.01, 0.2, 0.3, -0.4, 0.9], dtype=np.float32)
    q = int8_of(v)
    assert q.dtype == np.int8 and q[0] == 71 and q[8] == 127 and q[1] == -35
    assert list(binary_of(v)) == [0b01101001, 0b1]


def test_contextual_vectors_depend_on_the_document() -> None:
    doc = ["intro", "body text", "end"]
    rows = contextual_matrix(doc, 128)
    assert np.allclose(rows[1], contextual_vector(doc, 1, 128))
    assert not np.allclose(rows[1], contextual_vector(["other", "body text"], 1, 128))


# -- OpenAI-style upstream -------------------------------------------------------------


def test_openai_float_inputs(oai: httpx.Client) -> None:
    cases: list[tuple[Any, list[Any]]] = [
        ("hello world", ["hello world"]),
        (["a b c", "d"], ["a b c", "d"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ]
    for given, items in cases:
        r = embed(oai, given, user="u-1")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == MINI
        assert [d["index"] for d in body["data"]] == list(range(len(items)))
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert np.allclose(got, fake_matrix(items, 384), atol=1e-6)
        tokens = sum(fake_token_count(i) for i in items)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_openai_base64_and_dimensions(oai: httpx.Client) -> None:
    r = embed(oai, ["x y"], encoding_format="base64", dimensions=100)
    vec = b64(r.json()["data"][0]["embedding"], "<f4")
    assert vec.shape == (100,) and np.allclose(vec, fake_vector("x y", 100))
    r = embed(oai, "x", dimensions=None, encoding_format=None)
    assert len(r.json()["data"][0]["embedding"]) == 384


def test_openai_auth(oai_server: OAIServer) -> None:
    body = {"model": MINI, "input": "a"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
        r = httpx.post(oai_server.url(EMB), json=body, headers=headers)
        assert r.status_code == 401
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "body",
    [
        {"model": MINI, "input": ""},
        {"model": MINI, "input": []},
        {"model": MINI, "input": ["a", ""]},
        {"model": MINI, "input": [[1], []]},
        {"model": MINI, "input": ["a", 1]},
        {"model": MINI, "input": [-1]},
        {"model": MINI, "input": [True]},
        {"model": MINI, "input": {"a": 1}},
        {"model": MINI},
        {"input": "a"},
        {"model": MINI, "input": "a", "encoding_format": "base64_int8"},
        {"model": MINI, "input": "a", "dimensions": 0},
        {"model": MINI, "input": "a", "dimensions": 385},
        {"model": MINI, "input": "a", "dimensions": "8"},
        {"model": MINI, "input": "a", "user": 5},
        [1],
    ],
)
def test_openai_rejects_invalid_requests(oai: httpx.Client, body: Any) -> None:
    r = oai.post(EMB, json=body)
    assert r.status_code == 400, body
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openai_unknown_model_and_bad_json(oai: httpx.Client) -> None:
    r = oai.post(EMB, json={"model": "nope", "input": "a"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert oai.post(EMB, content=b"{not json").status_code == 400


def test_openai_limits(oai: httpx.Client) -> None:
    assert embed(oai, ["a"] * 2048).status_code == 200
    assert embed(oai, ["a"] * 2049).status_code == 400
    assert embed(oai, words(8192)).status_code == 200
    r = embed(oai, [words(8193)])
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert embed(oai, [list(range(8193))]).status_code == 400
    r = embed(oai, [words(8000)] * 38)
    assert r.status_code == 400 and r.json()["error"]["code"] == "max_tokens_per_request"
    assert embed(oai, [words(8000)] * 37).status_code == 200


def test_openai_options() -> None:
    app = OpenAIUpstream(
        models={"m": 8}, include_usage=False, supports_dimensions=False,
        reject_unknown_fields=True,
    )
    with run_in_thread(app) as server, httpx.Client(base_url=server.base_url) as client:
        r = client.post(EMB, json={"model": "m", "input": "a"})
        assert r.status_code == 200 and "usage" not in r.json()
        assert len(r.json()["data"][0]["embedding"]) == 8
        reduced = {"model": "m", "input": "a", "dimensions": 4}
        assert client.post(EMB, json=reduced).status_code == 400
        assert client.post(EMB, json={"model": "m", "input": "a", "extra": 1}).status_code == 400
    lenient = OpenAIUpstream(
        models={"m": 8}, supports_dimensions=False, ignore_unsupported_dimensions=True
    )
    with run_in_thread(lenient) as server:
        r = httpx.post(server.url(EMB), json={"model": "m", "input": "a", "dimensions": 4})
        assert len(r.json()["data"][0]["embedding"]) == 8


def test_requests_are_recorded(oai: httpx.Client, oai_server: OAIServer) -> None:
    body = {"model": MINI, "input": "a", "extra_param": {"x": 1}}
    assert oai.post(EMB, json=body, headers={"x-request-id": "req-7"}).status_code == 200
    seen = oai_server.app.log.last
    assert seen.path == EMB and seen.method == "POST" and seen.fault is None
    assert seen.json == body and "metadata" not in seen.json
    assert seen.header("Authorization") == f"Bearer {KEY}"
    assert seen.header("x-request-id") == "req-7"
    listed = oai.get("/_fake/requests").json()
    assert listed["count"] == 1 and listed["requests"][0]["json"] == body
    assert listed["max_in_flight"] == 1


# -- Perplexity upstream ---------------------------------------------------------------


def test_perplexity_embeddings(pplx: httpx.Client) -> None:
    r = pplx.post(EMB, json={"model": PPLX, "input": ["a b", "c"], "dimensions": 256})
    body = r.json()
    assert r.status_code == 200 and body["model"] == PPLX and body["object"] == "list"
    for item, text in zip(body["data"], ["a b", "c"]):
        assert item["object"] == "embedding"
        assert np.array_equal(b64(item["embedding"], "i1"), int8_of(fake_vector(text, 256)))
    cost = 3 * 0.004 / 1e6
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 3
    assert body["usage"]["cost"] == {"input_cost": cost, "total_cost": cost, "currency": "USD"}
    r = pplx.post(EMB, json={"model": "pplx-embed-v1-4b", "input": "x",
                             "encoding_format": "base64_binary"})
    bits = b64(r.json()["data"][0]["embedding"], "u1")
    assert bits.shape == (320,) and np.array_equal(bits, binary_of(fake_vector("x", 2560)))


def test_perplexity_contextualized(pplx: httpx.Client) -> None:
    docs = [["intro text", "more"], ["solo"]]
    r = pplx.post(CTX, json={"model": PPLX_CTX, "input": docs, "dimensions": 128})
    body = r.json()
    assert r.status_code == 200 and body["usage"]["total_tokens"] == 4
    assert [d["index"] for d in body["data"]] == [0, 1]
    for d, doc in enumerate(docs):
        entry = body["data"][d]
        assert entry["object"] == "list"
        assert [c["index"] for c in entry["data"]] == list(range(len(doc)))
        for c, chunk in enumerate(entry["data"]):
            want = int8_of(contextual_vector(doc, c, 128))
            assert np.array_equal(b64(chunk["embedding"], "i1"), want)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (EMB, {"model": PPLX, "input": ""}),
        (EMB, {"model": PPLX, "input": ["a", ""]}),
        (EMB, {"model": PPLX, "input": [1, 2]}),
        (EMB, {"model": PPLX, "input": []}),
        (EMB, {"model": PPLX, "input": ["a"] * 513}),
        (EMB, {"model": PPLX, "input": words(32769)}),
        (EMB, {"model": PPLX, "input": [words(30001)] * 4}),
        (EMB, {"model": PPLX, "input": "a", "dimensions": 127}),
        (EMB, {"model": PPLX, "input": "a", "dimensions": 1025}),
        (EMB, {"model": PPLX, "input": "a", "dimensions": 2561}),
        (EMB, {"model": PPLX, "input": "a", "encoding_format": "float"}),
        (EMB, {"model": PPLX_CTX, "input": "a"}),
        (EMB, {"input": "a"}),
        (CTX, {"model": PPLX_CTX, "input": ["a"]}),
        (CTX, {"model": PPLX_CTX, "input": [[]]}),
        (CTX, {"model": PPLX_CTX, "input": [["a", ""]]}),
        (CTX, {"model": PPLX_CTX, "input": [["a"]] * 513}),
        (CTX, {"model": PPLX_CTX, "input": [["a"] * 500] * 33}),
        (CTX, {"model": PPLX_CTX, "input": [[words(20000), words(12769)]]}),
        (CTX, {"model": PPLX_CTX, "input": [[words(30001)]] * 4}),
        (CTX, {"model": PPLX, "input": [["a"]]}),
    ],
)
def test_perplexity_rejects_with_422(pplx: httpx.Client, path: str, body: Any) -> None:
    r = pplx.post(path, json=body)
    assert r.status_code == 422, r.text
    for entry in r.json()["detail"]:
        assert {"loc", "msg", "type"} <= set(entry) and entry["loc"][0] == "body"


def test_perplexity_limits_accept_the_maximum(pplx: httpx.Client) -> None:
    assert pplx.post(EMB, json={"model": PPLX, "input": ["a"] * 512}).status_code == 200
    docs = [[words(10000), words(22768)], [words(32768)], [words(32768)], [words(21696)]]
    assert pplx.post(CTX, json={"model": PPLX_CTX, "input": docs}).status_code == 200
    assert pplx.post(CTX, json={"model": PPLX_CTX, "input": [["a"] * 500] * 32}).status_code == 200


def test_perplexity_auth_and_bad_json(pplx_server: PplxServer) -> None:
    r = httpx.post(pplx_server.url(EMB), json={"model": PPLX, "input": "a"})
    assert r.status_code == 401
    r = httpx.post(pplx_server.url(EMB), content=b"{", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


# -- faults ----------------------------------------------------------------------------


def test_status_fault_with_retry_headers(oai: httpx.Client, oai_server: OAIServer) -> None:
    oai_server.app.faults.add("status", status=429, retry_after="2", retry_after_ms=1500)
    oai_server.app.faults.add("status", status=503, body={"detail": "down"})
    r = embed(oai)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2" and r.headers["retry-after-ms"] == "1500"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = embed(oai)
    assert r.status_code == 503 and r.json() == {"detail": "down"}
    assert embed(oai).status_code == 200
    assert oai_server.app.log.requests[0].fault == "status"


def test_times_path_and_forever(oai: httpx.Client, pplx: httpx.Client,
                                pplx_server: PplxServer) -> None:
    faults = pplx_server.app.faults
    faults.add("status", times=2, status=500, path=CTX)
    ctx = {"model": PPLX_CTX, "input": [["a"]]}
    assert pplx.post(EMB, json={"model": PPLX, "input": "a"}).status_code == 200
    assert [pplx.post(CTX, json=ctx).status_code for _ in range(3)] == [500, 500, 200]
    faults.add("status", times=None, status=502)
    assert [pplx.post(CTX, json=ctx).status_code for _ in range(3)] == [502] * 3
    pplx_server.app.reset()
    assert pplx.post(CTX, json=ctx).status_code == 200


def test_delay_and_hang(oai: httpx.Client, oai_server: OAIServer) -> None:
    oai_server.app.faults.add("delay", seconds=0.2)
    started = time.monotonic()
    assert embed(oai).status_code == 200
    assert time.monotonic() - started >= 0.2
    oai_server.app.faults.add("hang")
    with pytest.raises(httpx.ReadTimeout):
        oai.post(EMB, json={"model": MINI, "input": "a"}, timeout=0.2)
    deadline = time.monotonic() + 2
    while oai_server.app.log.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert oai_server.app.log.in_flight == 0  # the hang noticed the client leave


@pytest.mark.parametrize(
    ("when", "error"),
    [
        ("before_response", httpx.RemoteProtocolError),
        ("mid_body", httpx.RemoteProtocolError),
        ("reset", httpx.ReadError),
    ],
)
def test_drop(oai: httpx.Client, oai_server: OAIServer,
              when: str, error: type[Exception]) -> None:
    oai_server.app.faults.add("drop", when=when)
    with pytest.raises(error):
        embed(oai)
    assert embed(oai).status_code == 200


def test_invalid_json(oai: httpx.Client, oai_server: OAIServer) -> None:
    oai_server.app.faults.add("invalid_json", times=2)
    r = embed(oai)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(embed(oai).content)


def test_wrong_count_dims_index_and_order(oai: httpx.Client,
                                          oai_server: OAIServer) -> None:
    faults = oai_server.app.faults
    three = ["a", "b", "c"]

    def indices() -> list[int]:
        return [d["index"] for d in embed(oai, three).json()["data"]]

    faults.add("wrong_count")
    assert indices() == [0, 1]
    faults.add("wrong_count", delta=1)
    assert indices() == [0, 1, 2, 3]
    faults.add("bad_index")
    assert indices() == [0, 1, 0]
    faults.add("bad_index", kind="out_of_range")
    assert indices() == [0, 1, 3]
    faults.add("reorder")
    body = embed(oai, three).json()
    assert [d["index"] for d in body["data"]] == [2, 1, 0]
    assert np.allclose(body["data"][0]["embedding"], fake_vector("c", 384))
    faults.add("wrong_dims", times=2)
    assert len(embed(oai).json()["data"][0]["embedding"]) == 383
    encoded = embed(oai, encoding_format="base64").json()["data"][0]["embedding"]
    assert len(b64(encoded, "<f4")) == 383


def test_nan(oai: httpx.Client, oai_server: OAIServer,
             pplx_server: PplxServer) -> None:
    oai_server.app.faults.add("nan", times=2)
    r = embed(oai, ["a", "b"])
    assert np.isnan(r.json()["data"][0]["embedding"][0])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    vec = b64(embed(oai, encoding_format="base64").json()["data"][0]["embedding"], "<f4")
    assert np.isnan(vec[0]) and not np.isnan(vec[1:]).any()
    with pytest.raises(ValueError):
        pplx_server.app.faults.add("nan")


def test_perplexity_corruptions(pplx: httpx.Client, pplx_server: PplxServer) -> None:
    faults = pplx_server.app.faults
    faults.add("wrong_dims", times=2)
    r = pplx.post(EMB, json={"model": PPLX, "input": "a", "dimensions": 128})
    assert len(base64.b64decode(r.json()["data"][0]["embedding"])) == 127
    r = pplx.post(EMB, json={"model": PPLX, "input": "a", "encoding_format": "base64_binary"})
    assert len(base64.b64decode(r.json()["data"][0]["embedding"])) == 127
    docs = {"model": PPLX_CTX, "input": [["a", "b"], ["c", "d"]]}

    def shape() -> list[tuple[int, list[int]]]:
        data = pplx.post(CTX, json=docs).json()["data"]
        return [(d["index"], [c["index"] for c in d["data"]]) for d in data]

    faults.add("wrong_count")
    assert shape() == [(0, [0, 1]), (1, [0])]
    faults.add("wrong_count", level="documents")
    assert shape() == [(0, [0, 1])]
    faults.add("bad_index", level="documents")
    assert shape() == [(0, [0, 1]), (0, [0, 1])]


def test_random_faults_are_seeded(oai: httpx.Client, oai_server: OAIServer) -> None:
    faults = oai_server.app.faults

    def pattern() -> list[int]:
        faults.set_random(0.5, seed=7, faults=[Fault("status", {"status": 503})])
        return [embed(oai).status_code for _ in range(30)]

    first = pattern()
    assert 503 in first and 200 in first
    assert faults.injected["status"] == first.count(503)
    assert pattern() == first
    faults.set_random(1.0, faults=["invalid_json"])
    with pytest.raises(json.JSONDecodeError):
        embed(oai).json()


def test_http_control(oai: httpx.Client) -> None:
    commands = [
        {"mode": "status", "status": 503, "times": 2},
        {"mode": "drop", "path": "/elsewhere"},
    ]
    assert oai.post("/_fake/faults", json=commands).status_code == 200
    assert len(oai.get("/_fake/faults").json()["pending"]) == 2
    assert [embed(oai).status_code for _ in range(3)] == [503, 503, 200]
    listed = oai.get("/_fake/requests", params={"limit": 2}).json()
    assert listed["count"] == 3 and len(listed["requests"]) == 2
    assert oai.post("/_fake/faults", json={"mode": "explode"}).status_code == 400
    assert oai.post("/_fake/faults", json={"mode": "delay", "seconds": -1}).status_code == 400
    rate = {"fail_rate": 1, "faults": ["wrong_count"]}
    assert oai.post("/_fake/faults", json=rate).status_code == 200
    assert embed(oai, ["a", "b"]).json()["data"][0]["index"] == 0
    assert len(embed(oai, ["a", "b"]).json()["data"]) == 1
    assert oai.post("/_fake/reset").json() == {"ok": True}
    assert oai.get("/_fake/requests").json()["count"] == 0
    assert len(embed(oai, ["a", "b"]).json()["data"]) == 2
    assert oai.get("/_fake/health").json() == {"ok": True}


# -- running the servers -----------------------------------------------------------------


def test_run_async_and_shutdown_with_a_pending_hang() -> None:
    async def scenario() -> float:
        async with httpx.AsyncClient() as client:
            async with run_async(OpenAIUpstream()) as server:
                server.app.faults.add("hang")
                body = {"model": MINI, "input": "a"}
                call = asyncio.ensure_future(client.post(server.url(EMB), json=body))
                while not server.app.log.in_flight:
                    await asyncio.sleep(0.005)
                started = time.monotonic()
            with pytest.raises(httpx.RemoteProtocolError):
                await call
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_subprocess_entry_point() -> None:
    tests_dir = Path(__file__).parent
    command = [sys.executable, "-m", "fakes.openai_upstream", "--port", "0", "--dims", "64"]
    with subprocess.Popen(command, cwd=tests_dir, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:")
            url = line.split()[-1]
            r = httpx.post(url + EMB, json={"model": "text-embedding-3-small", "input": "hi"})
            assert np.allclose(r.json()["data"][0]["embedding"], fake_vector("hi", 64))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
