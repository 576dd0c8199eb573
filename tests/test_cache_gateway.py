"""The embedding cache through the real gateway, against a counting fake upstream."""

from __future__ import annotations

import base64
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from cache_support import OAI_KEY, PRICE, GatedUpstream, embed, expected, gateway, metric, sent_texts
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import fake_token_count
from redis_server import redis_server


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningServer[GatedUpstream]]:
    with run_in_thread(GatedUpstream(api_key=OAI_KEY, log_size=100_000)) as server:
        yield server


@pytest.fixture
def upstream(fake: RunningServer[GatedUpstream]) -> Iterator[GatedUpstream]:
    fake.app.reset()
    fake.app.gate.set()
    yield fake.app
    fake.app.gate.set()  # a failed test must not leave answers held


def wait_until(condition: Any, what: str) -> None:
    """Polls ``condition`` (a state, not a time) and gives up after a generous bound."""
    for _ in range(3000):
        if condition():
            return
        threading.Event().wait(0.01)
    pytest.fail(f"never saw: {what}")


@pytest.fixture
def base(fake: RunningServer[GatedUpstream], upstream: GatedUpstream) -> Iterator[str]:
    with gateway(fake.base_url, {"backend": "memory"}) as server:
        yield server.base_url


def vectors(response: httpx.Response) -> list[np.ndarray]:
    return [np.asarray(item["embedding"], dtype=np.float32) for item in response.json()["data"]]


def test_repeated_texts_reach_the_upstream_once(base: str, upstream: GatedUpstream) -> None:
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    first = embed(base, texts)
    second = embed(base, texts)
    assert sent_texts(upstream) == texts
    assert (first.headers["x-gateway-cache"], first.headers["x-gateway-cached-inputs"]) == ("miss", "0")
    assert (second.headers["x-gateway-cache"], second.headers["x-gateway-cached-inputs"]) == ("hit", "3")
    for got, text in zip(vectors(second), texts):
        np.testing.assert_allclose(got, expected(text), atol=1e-6)
    # usage counts every input as the backend would; the fully cached answer costs nothing.
    tokens = sum(fake_token_count(t) for t in texts)
    assert first.json()["usage"]["prompt_tokens"] == second.json()["usage"]["prompt_tokens"] == tokens
    assert first.json()["usage"]["cost"]["total_cost"] == pytest.approx(tokens * PRICE / 1e6)
    assert second.json()["usage"]["cost"]["total_cost"] == 0.0
    assert second.headers["x-gateway-deployment"] == "mini"


def test_a_batch_with_hits_and_repeats_sends_only_the_new_unique_texts(base: str, upstream: GatedUpstream) -> None:
    cached = [f"cached text {i}" for i in range(100)]
    embed(base, cached)
    upstream.reset()
    new = [f"new text number {i}" for i in range(180)]
    batch = cached + new + new[:20]
    rng = np.random.default_rng(7)
    order = rng.permutation(len(batch))
    batch = [batch[i] for i in order]
    response = embed(base, batch)
    sent = sent_texts(upstream)
    assert len(sent) == 180 and set(sent) == set(new)
    assert all(len(r.json["input"]) <= 64 for r in upstream.log.requests)  # the alias's batches
    assert response.headers["x-gateway-cache"] == "partial"
    assert response.headers["x-gateway-cached-inputs"] == "100"  # repeats of new inputs do not count
    for got, text in zip(vectors(response), batch):
        np.testing.assert_allclose(got, expected(text), atol=1e-6)
    assert response.json()["usage"]["prompt_tokens"] == sum(fake_token_count(t) for t in batch)


def test_concurrent_identical_requests_make_one_upstream_call(base: str, upstream: GatedUpstream) -> None:
    upstream.gate.clear()
    texts = ["one shared input", "and another"]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(embed, base, texts) for _ in range(4)]
        try:
            wait_until(
                lambda: metric(base, "gateway_cache_waiting") == 6 and upstream.log.in_flight == 1,
                "three requests awaiting the first one's two inputs",
            )
        finally:
            upstream.gate.set()
        responses = [f.result() for f in futures]
    assert upstream.log.count == 1 and sent_texts(upstream) == texts
    assert sorted(r.headers["x-gateway-cache"] for r in responses) == ["hit", "hit", "hit", "miss"]
    for response in responses:
        for got, text in zip(vectors(response), texts):
            np.testing.assert_allclose(got, expected(text), atol=1e-6)
    assert metric(base, "gateway_cache_coalesced_total") == 6


def test_no_cache_and_no_store(base: str, upstream: GatedUpstream) -> None:
    embed(base, ["refresh me"])
    fresh = embed(base, ["refresh me"], headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-gateway-cache"] == "miss" and len(sent_texts(upstream)) == 2
    assert embed(base, ["refresh me"]).headers["x-gateway-cache"] == "hit"
    skipped = embed(base, ["refresh me"], headers={"Cache-Control": "no-store"})
    assert skipped.headers["x-gateway-cache"] == "off" and len(sent_texts(upstream)) == 3
    embed(base, ["never stored"], headers={"cache-control": "max-age=0, No-Store"})
    assert embed(base, ["never stored"]).headers["x-gateway-cache"] == "miss"
    # no-cache stored what it fetched.
    embed(base, ["stored by a refresh"], headers={"Cache-Control": "no-cache"})
    assert embed(base, ["stored by a refresh"]).headers["x-gateway-cache"] == "hit"


def test_a_float_hit_serves_other_encodings_and_widths(base: str, upstream: GatedUpstream) -> None:
    text = ["matryoshka doll"]
    embed(base, text)
    binary = embed(base, text, encoding_format="base64_binary", dimensions=64)
    assert binary.headers["x-gateway-cache"] == "hit" and len(sent_texts(upstream)) == 1
    bits = np.unpackbits(np.frombuffer(base64.b64decode(binary.json()["data"][0]["embedding"]), np.uint8), bitorder="little")
    assert np.array_equal(bits.astype(bool), expected(text[0], dims=64) > 0)
    cut = embed(base, text, dimensions=32)
    np.testing.assert_allclose(vectors(cut)[0], expected(text[0], dims=32), atol=1e-6)
    raw = embed(base, text, encoding_format="base64")
    np.testing.assert_allclose(
        np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), "<f4"), expected(text[0]), atol=1e-7
    )
    # Native dimensions are part of the key: a 256-wide vector is the upstream's own.
    embed(base, text, model="small", dimensions=256)
    embed(base, text, model="small", dimensions=128)
    assert sent_texts(upstream) == text * 3
    again = embed(base, text, model="small", dimensions=128)
    assert again.headers["x-gateway-cache"] == "hit"
    np.testing.assert_allclose(vectors(again)[0], expected(text[0], model="small", dims=128), atol=1e-6)


def test_alias_off_and_unreasonable_options(base: str, upstream: GatedUpstream) -> None:
    for _ in range(2):
        assert embed(base, ["x"], model="nocache").headers["x-gateway-cache"] == "off"
    assert len(sent_texts(upstream)) == 2
    for _ in range(2):
        answer = embed(base, ["y"], extra_body={"output_dtype": "float"})
        assert answer.headers["x-gateway-cache"] == "off"
    # An option that reaches the backend is part of the key.
    assert embed(base, ["z"], extra_body={"tag": "a"}).headers["x-gateway-cache"] == "miss"
    assert embed(base, ["z"], extra_body={"tag": "b"}).headers["x-gateway-cache"] == "miss"
    assert embed(base, ["z"], extra_body={"tag": "a"}).headers["x-gateway-cache"] == "hit"


def test_scope_key_keeps_tenants_apart(fake: RunningServer[GatedUpstream], upstream: GatedUpstream) -> None:
    auth = {"keys": [{"id": "a", "key": "key-a"}, {"id": "b", "key": "key-b"}]}
    with gateway(fake.base_url, {"backend": "memory", "scope": "key"}, auth=auth) as server:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        assert embed(server.base_url, ["secret"], headers=a).headers["x-gateway-cache"] == "miss"
        assert embed(server.base_url, ["secret"], headers=b).headers["x-gateway-cache"] == "miss"
        assert embed(server.base_url, ["secret"], headers=a).headers["x-gateway-cache"] == "hit"
    assert len(sent_texts(upstream)) == 2
    with gateway(fake.base_url, {"backend": "memory"}, auth=auth) as server:
        embed(server.base_url, ["shared"], headers={"Authorization": "Bearer key-a"})
        hit = embed(server.base_url, ["shared"], headers={"Authorization": "Bearer key-b"})
        assert hit.headers["x-gateway-cache"] == "hit"


def test_sqlite_cache_survives_a_restart_and_honours_ttl(
    fake: RunningServer[GatedUpstream], upstream: GatedUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "cache.db"
    settings = {"backend": f"sqlite:///{db}", "ttl_s": 3600}
    with gateway(fake.base_url, settings) as server:
        embed(server.base_url, ["persist me", "and me"])
    with gateway(fake.base_url, settings) as server:
        again = embed(server.base_url, ["persist me", "and me"])
        assert again.headers["x-gateway-cache"] == "hit"
        with sqlite3.connect(db) as conn:
            expiries = [row[0] for row in conn.execute("SELECT expires FROM embedding_cache")]
            assert len(expiries) == 2 and all(e is not None for e in expiries)
            conn.execute("UPDATE embedding_cache SET expires = 1")  # both expired long ago
        assert embed(server.base_url, ["persist me", "and me"]).headers["x-gateway-cache"] == "miss"
    assert len(sent_texts(upstream)) == 4


def test_a_locked_or_broken_sqlite_cache_degrades_to_uncached_serving(
    fake: RunningServer[GatedUpstream], upstream: GatedUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "cache.db"
    with gateway(fake.base_url, {"backend": f"sqlite:///{db}"}) as server:
        embed(server.base_url, ["warm"])
        wait_until(lambda: metric(server.base_url, "gateway_cache_stored_total") == 1, "the first write")
        blocker = sqlite3.connect(db)
        blocker.execute("BEGIN EXCLUSIVE")  # WAL: readers still read, writers wait and give up
        try:
            answer = embed(server.base_url, ["warm", "cold"])
            assert answer.headers["x-gateway-cache"] == "partial"
            np.testing.assert_allclose(vectors(answer)[1], expected("cold"), atol=1e-6)
            wait_until(lambda: metric(server.base_url, "gateway_cache_errors_total") == 1, "the failed write")
        finally:
            blocker.rollback()
            blocker.close()
        assert embed(server.base_url, ["cold"]).headers["x-gateway-cache"] == "miss"  # it was never stored
        # A file that is no database at all: every read and write fails, every request is served.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").write_bytes(b"this is not a database" * 100)
        for _ in range(2):
            answer = embed(server.base_url, ["warm", "fresh"])
            assert answer.headers["x-gateway-cache"] == "miss"
            np.testing.assert_allclose(vectors(answer)[0], expected("warm"), atol=1e-6)
        assert metric(server.base_url, "gateway_cache_errors_total") >= 3
    assert "embedding cache (sqlite) write failed" in caplog.text
    assert "embedding cache (sqlite) read failed" in caplog.text


def test_redis_cache_shared_by_two_gateways_and_redis_down(
    fake: RunningServer[GatedUpstream], upstream: GatedUpstream
) -> None:
    with redis_server() as url:
        with gateway(fake.base_url, {"backend": "redis"}, state=url) as one:
            embed(one.base_url, ["in redis"])
        with gateway(fake.base_url, {"backend": "redis"}, state=url) as two:
            assert embed(two.base_url, ["in redis"]).headers["x-gateway-cache"] == "hit"
            down_url = two.base_url
    assert len(sent_texts(upstream)) == 1
    with gateway(fake.base_url, {"backend": "redis"}, state=url) as three:  # nothing listens there now
        answer = embed(three.base_url, ["in redis", "more"])
        assert answer.headers["x-gateway-cache"] == "miss"
        assert metric(three.base_url, "gateway_cache_errors_total") >= 2  # the read and the write
    assert down_url


def test_ledger_and_usage_report_show_cached_tokens(
    fake: RunningServer[GatedUpstream], upstream: GatedUpstream, tmp_path: Path
) -> None:
    ledger = f"sqlite:///{tmp_path / 'usage.db'}"
    with gateway(fake.base_url, {"backend": "memory"}, usage={"ledger": ledger}) as server:
        embed(server.base_url, ["a b c", "d e"])
        embed(server.base_url, ["a b c", "d e", "f"])
        usage = httpx.get(f"{server.base_url}/v1/usage", params={"group_by": "alias"}, timeout=10).json()
    row = usage["data"][0]
    assert (row["inputs"], row["prompt_tokens"]) == (5, 11)
    assert (row["cached_inputs"], row["cached_tokens"]) == (2, 5)
    assert row["cost"] == pytest.approx(6 * PRICE / 1e6)
    assert row["cost_saved"] == pytest.approx(5 * PRICE / 1e6)
    with sqlite3.connect(tmp_path / "usage.db") as conn:
        rows = conn.execute("SELECT cached_inputs, cached_tokens, cost, cost_saved FROM usage ORDER BY ts").fetchall()
    assert rows[0][:2] == (0, 0) and rows[1][:2] == (2, 5)
    assert rows[1][2] == pytest.approx(1 * PRICE / 1e6)


def test_an_old_ledger_gets_the_new_columns(tmp_path: Path) -> None:
    import asyncio

    from gateway.usage.ledger import UsageLedger, UsageRecord

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE usage (id INTEGER PRIMARY KEY, ts REAL, request_id TEXT, key_id TEXT, alias TEXT, "
            "deployment TEXT, provider TEXT, upstream_model TEXT, inputs INTEGER, prompt_tokens INTEGER, "
            "total_tokens INTEGER, cost REAL, status INTEGER, latency_ms REAL, attempts INTEGER, user TEXT, "
            "metadata TEXT)"
        )

    async def write() -> None:
        ledger = UsageLedger(f"sqlite:///{path}")
        await ledger.start()
        ledger.record(UsageRecord(
            ts=1.0, request_id="r", key_id=None, alias="a", deployment="d", provider="p", upstream_model="m",
            inputs=2, prompt_tokens=4, total_tokens=4, cost=0.0, status=200, latency_ms=1.0, attempts=0,
            cached_inputs=2, cached_tokens=4, cost_saved=0.5,
        ))
        await ledger.aclose()

    asyncio.run(write())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT cached_inputs, cached_tokens, cost_saved FROM usage").fetchall() == [(2, 4, 0.5)]


def test_cache_config_errors_name_their_path() -> None:
    from gateway.config import ConfigError, parse_config

    models = {"m": {"provider": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "x", "cache": "yes"}}
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"models": models, "cache": {"backend": "disk", "max_bytes": -1, "scope": "team", "ttl_s": "1h", "other": 1}},
            env={},
        )
    errors = "\n".join(caught.value.errors)
    for fragment in (
        "cache.backend: must be memory, sqlite:///PATH, redis or off",
        "cache.max_bytes: must be at least 1024",
        "cache.scope: must be one of global, key",
        "cache.ttl_s: must be a number",
        "cache.other: unknown key",
        "models.m.cache: must be true or false",
    ):
        assert fragment in errors, errors
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2"}}, "cache": {"backend": "redis"}}, env={})
    assert "cache.backend: redis keeps the cache on the `state` server" in caught.value.errors[0]
    config = parse_config({"models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2"}}, "cache": {"backend": False}}, env={})
    assert not config.cache.enabled
    config = parse_config({"models": {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2"}}, "cache": {}}, env={})
    assert config.cache.backend == "memory" and config.caches("m")
