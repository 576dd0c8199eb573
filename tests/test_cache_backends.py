"""The cache's keys, its entry format and its three backends (memory, SQLite, real Redis)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.cache import Entry, MemoryBackend, SQLiteBackend, decode_entry, encode_entry, namespace
from gateway.cache.memory import ENTRY_OVERHEAD
from gateway.cache.redis import RedisBackend
from redis_server import redis_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ns(**changes: Any) -> Any:
    fields: dict[str, Any] = dict(
        deployment="d", provider="openai", model="m", space="m", settings={}, dimensions=None,
        input_type=None, options={}, scope=None,
    )
    fields.update(changes)
    return namespace(**fields)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_part_that_decides_a_vector_changes_the_key() -> None:
    base = ns().key("hello")
    variants = [
        ns(model="other"), ns(space="other"), ns(provider="cohere"), ns(dimensions=256),
        ns(input_type="query"), ns(options={"truncate": "END"}), ns(scope="tenant-a"),
        ns(settings={"pooling": "cls"}),
    ]
    keys = {v.key("hello") for v in variants}
    assert base not in keys and len(keys) == len(variants)
    assert ns().key("hello") == base
    assert ns().key("hello ") != base
    # A text and the token ids that spell its digits are different inputs.
    assert ns().key("[1, 2]") != ns().key([1, 2])
    assert ns().key([1, 2]) != ns().key([2, 1])
    # The deployment's name is not part of the key: it does not decide the vector.
    assert ns(deployment="another-name").key("hello") == base


def test_options_the_cache_cannot_reason_about_make_a_request_uncacheable() -> None:
    assert ns(options={"encoding_format": "base64"}) is None
    assert ns(options={"dimensions": 12}) is None
    assert ns(options={"x": float("nan")}) is None
    assert ns(options={"x": object()}) is None
    assert ns(options={"x": {1: "a"}}) is None
    assert ns(options={"x": [1, {"y": "z"}]}) is not None
    # Equal options in another order are the same namespace.
    assert ns(options={"a": 1, "b": 2}).digest == ns(options={"b": 2, "a": 1}).digest
    # An int and a float of the same value are kept apart (conservative, never wrong).
    assert ns(options={"a": 1}).digest != ns(options={"a": 1.0}).digest


def test_an_entry_round_trips_and_a_bad_one_is_absent() -> None:
    vector = np.arange(8, dtype=np.float32) / 7
    raw = encode_entry(Entry(vector=vector, tokens=12, estimated=True))
    entry = decode_entry(raw)
    assert entry is not None and entry.tokens == 12 and entry.estimated
    assert np.array_equal(entry.vector, vector) and entry.vector.dtype == np.float32
    assert decode_entry(raw[:-1]) is None
    assert decode_entry(b"") is None
    assert decode_entry(b"\x09" + raw[1:]) is None
    nan = encode_entry(Entry(vector=np.array([np.nan, 1], dtype=np.float32), tokens=1))
    assert decode_entry(nan) is None


@pytest.mark.anyio
async def test_memory_backend_is_an_lru_bounded_by_bytes() -> None:
    value = b"v" * 100
    per_entry = 32 + len(value) + ENTRY_OVERHEAD
    backend = MemoryBackend(max_bytes=per_entry * 3)
    keys = [bytes([i]) * 32 for i in range(5)]
    await backend.put_many([(k, value) for k in keys[:3]])
    assert await backend.get_many([keys[0]]) == [value]  # key 0 is now the most recent
    await backend.put_many([(keys[3], value)])
    assert await backend.get_many(keys[:4]) == [value, None, value, value]
    assert backend.evictions == 1 and backend.size_bytes == per_entry * 3 <= backend.max_bytes
    await backend.put_many([(keys[4], value)])
    assert backend.evictions == 2 and len(backend) == 3
    # Overwriting a key does not count it twice.
    await backend.put_many([(keys[4], value)])
    assert backend.size_bytes == per_entry * 3
    # A value larger than the whole bound is not stored (and evicts nothing).
    await backend.put_many([(b"x" * 32, b"y" * per_entry * 4)])
    assert len(backend) == 3 and backend.evictions == 2


@pytest.mark.anyio
async def test_memory_backend_expires_entries_after_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(max_bytes=10_000, ttl_s=60, clock=clock)
    await backend.put_many([(b"k" * 32, b"value")])
    clock.now += 59
    assert await backend.get_many([b"k" * 32]) == [b"value"]
    clock.now += 1
    assert await backend.get_many([b"k" * 32]) == [None]
    assert backend.size_bytes == 0


@pytest.mark.anyio
async def test_sqlite_backend_persists_across_instances_and_expires(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    clock = Clock()
    first = SQLiteBackend(path, ttl_s=60, clock=clock)
    await first.start()
    items = [(i.to_bytes(32, "big"), i.to_bytes(40, "big")) for i in range(1200)]  # several SELECTs
    await first.put_many(items)
    await first.aclose()
    second = SQLiteBackend(path, ttl_s=60, clock=clock)
    await second.start()
    keys = [k for k, _ in items] + [b"z" * 32]
    values = await second.get_many(keys)
    assert values == [v for _, v in items] + [None]
    assert await second.get_many([items[5][0], items[5][0]]) == [items[5][1]] * 2
    clock.now += 61
    assert await second.get_many([items[0][0]]) == [None]
    await second.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.anyio
async def test_sqlite_backend_raises_when_locked_and_recovers(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    backend = SQLiteBackend(path, busy_timeout_s=0.01)
    await backend.start()
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError):
        await backend.put_many([(b"k" * 32, b"v")])
    blocker.rollback()
    blocker.close()
    await backend.put_many([(b"k" * 32, b"v")])
    assert await backend.get_many([b"k" * 32]) == [b"v"]
    await backend.aclose()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.mark.anyio
async def test_redis_backend_stores_under_its_prefix_with_ttl(redis_client: aioredis.Redis) -> None:
    backend = RedisBackend(redis_client, ttl_s=30)
    items = [(bytes([i]) * 32, bytes([i]) * 50) for i in range(20)]
    await backend.put_many(items)
    keys = [k for k, _ in items]
    assert await backend.get_many(keys + [b"q" * 32]) == [v for _, v in items] + [None]
    ttl = await redis_client.pttl(b"egw:cache:" + keys[0])
    assert 0 < ttl <= 30_000
    assert await backend.get_many([]) == []
    forever = RedisBackend(redis_client, prefix=b"other:")
    await forever.put_many(items[:1])
    assert await redis_client.pttl(b"other:" + keys[0]) == -1
    assert await forever.get_many(keys[1:2]) == [None]  # another prefix sees nothing else


@pytest.mark.anyio
async def test_redis_backend_raises_when_redis_is_down() -> None:
    with redis_server() as url:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        backend = RedisBackend(client)
        await backend.put_many([(b"k" * 32, b"v")])
    with pytest.raises(aioredis.ConnectionError):
        await backend.get_many([b"k" * 32])
    await client.aclose()
