"""Large request bodies are parsed in a worker process (gateway.http.body.JsonParser): the
same request as the inline parse, the same 400s for bad JSON, the worker stopped with the
app. Outcomes only, never times."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import LOCAL_MODELS, make_config
from fakes.server import run_in_thread
from serving import LOCAL, serve, write_config
from gateway.app import create_app
from gateway.http.body import POOL_MIN_BYTES, JsonParser

#: Larger than POOL_MIN_BYTES: escapes, non-ASCII, surrogate pairs, numbers, nesting.
DOCUMENT: dict[str, Any] = {
    "model": "mini",
    "input": ["plain", "quote \" backslash \\ tab \t newline \n", "é ü ß 中文 😀 \u2028", "x" * (POOL_MIN_BYTES + 10)],
    "dimensions": 384,
    "metadata": {"nested": [1, -2.5, 1e300, True, False, None, {"k": ["v"]}]},
}


def test_a_large_body_parses_as_the_inline_parse_does() -> None:
    raw = orjson.dumps(DOCUMENT)
    assert len(raw) >= POOL_MIN_BYTES

    async def run() -> tuple[Any, bool]:
        parser = JsonParser()
        try:
            return await parser.parse(raw), parser.started
        finally:
            await parser.aclose()

    parsed, used_worker = asyncio.run(run())
    assert used_worker
    assert parsed == orjson.loads(raw) == DOCUMENT


@pytest.mark.parametrize("tail", [b"]", b',"x": }', b'"\xff"}', b"} trailing"])
def test_bad_json_in_a_large_body_fails_as_inline(tail: bytes) -> None:
    raw = orjson.dumps(DOCUMENT)[:-1] + tail
    with pytest.raises(orjson.JSONDecodeError) as inline:
        orjson.loads(raw)

    async def run() -> str:
        parser = JsonParser()
        try:
            with pytest.raises(orjson.JSONDecodeError) as pooled:
                await parser.parse(raw)
            assert parser.started
            return str(pooled.value)
        finally:
            await parser.aclose()

    assert asyncio.run(run()) == str(inline.value)


def test_a_small_body_never_starts_the_worker() -> None:
    async def run() -> bool:
        parser = JsonParser()
        assert await parser.parse(b'{"model": "mini", "input": "hello"}') == {"model": "mini", "input": "hello"}
        return parser.started

    assert not asyncio.run(run())


def test_through_the_server_large_bodies_answer_as_small_ones_and_the_worker_stops_with_the_app() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    app = create_app(make_config(LOCAL_MODELS))
    with run_in_thread(app, lifespan="on", startup_timeout=60) as server:
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            short = "the quick brown fox " * 200  # far past the model's 256 tokens
            big = short * (POOL_MIN_BYTES // len(short) + 1)
            small_answer = client.post("/v1/embeddings", json={"model": "mini", "input": ["hello", short]})
            big_answer = client.post("/v1/embeddings", json={"model": "mini", "input": ["hello", big]})
            assert small_answer.status_code == big_answer.status_code == 200, big_answer.text
            for a, b in zip(small_answer.json()["data"], big_answer.json()["data"]):
                assert np.allclose(a["embedding"], b["embedding"], atol=1e-5)
            workers = {p.pid for p in multiprocessing.active_children()} - before
            assert len(workers) == 1  # the large body started it

            raw = orjson.dumps({"model": "mini", "input": big})[:-1] + b",}"
            with pytest.raises(orjson.JSONDecodeError) as inline:
                orjson.loads(raw)
            bad = client.post("/v1/embeddings", content=raw, headers={"content-type": "application/json"})
            assert bad.status_code == 400
            assert bad.json()["error"]["message"] == f"the request body is not valid JSON: {inline.value}"
    assert not workers & {p.pid for p in multiprocessing.active_children()}


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_exits_when_the_gateway_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gateway.yaml", {"usage": {"ledger": "off"}, "models": {"mini": LOCAL}})
    with serve(config) as (process, base):
        before = _children(process.pid)
        big = "lorem ipsum " * (POOL_MIN_BYTES // 12 + 1)
        assert httpx.post(f"{base}/v1/embeddings", json={"model": "mini", "input": big}, timeout=120).status_code == 200
        workers = _children(process.pid) - before
        assert workers, "the large body started no worker"
        process.send_signal(signal.SIGKILL)  # no shutdown reaches the pool
        # The worker holds the gateway's stdout and stderr: they end only once it has exited.
        process.communicate(timeout=120)
    # Its pipes close a moment before it is done exiting: wait for its exit itself (a pidfd
    # turns readable when the process has exited), at most 30 s.
    for pid in workers:
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([handle], [], [], 30)
        finally:
            os.close(handle)
    assert not [pid for pid in workers if _alive(pid)]
