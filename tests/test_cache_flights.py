"""EmbeddingCache.resolve: reads, coalescing in flight, and faults that never fail a request."""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np
import pytest

from gateway.cache import Deliver, EmbeddingCache, Entry, MemoryBackend
from providers.base import InvalidInput, ProviderUnavailable, UpstreamRateLimited


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def vec(text: str) -> np.ndarray:
    return np.array([float(len(text)), float(sum(map(ord, text)))], dtype=np.float32)


def lookups(texts: Sequence[str]) -> list[list[bytes]]:
    return [[t.encode().ljust(32, b"\0")] for t in texts]


class Upstream:
    """A compute function that records what it was asked and can be held or made to fail."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.error: BaseException | None = None

    async def __call__(self, positions: list[int], deliver: Deliver) -> None:
        asked = [self.texts[p] for p in positions]
        self.calls.append(asked)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        deliver(positions, [Entry(vector=vec(t), tokens=len(t)) for t in asked], 0)


class BrokenBackend(MemoryBackend):
    def __init__(self, *, reads: bool = True, writes: bool = True) -> None:
        super().__init__(max_bytes=1 << 20)
        self.reads, self.writes = reads, writes

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if self.reads:
            raise OSError("disk on fire")
        return await super().get_many(keys)

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if self.writes:
            raise OSError("disk on fire")
        await super().put_many(items)


@pytest.mark.anyio
async def test_hits_misses_and_order() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    first = Upstream(["a", "bb"])
    resolved = await cache.resolve(lookups(first.texts), first)
    assert first.calls == [["a", "bb"]] and resolved.cached == [False, False]
    await cache.flush()
    second = Upstream(["bb", "ccc", "a"])
    resolved = await cache.resolve(lookups(second.texts), second)
    assert second.calls == [["ccc"]]
    assert resolved.cached == [True, False, True]
    for text, entry in zip(second.texts, resolved.entries):
        assert np.array_equal(entry.vector, vec(text)) and entry.tokens == len(text)
    assert (cache.counters.hits, cache.counters.misses) == (2, 3)


@pytest.mark.anyio
async def test_no_cache_reads_nothing_but_stores() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    up = Upstream(["a"])
    await cache.resolve(lookups(["a"]), up)
    await cache.flush()
    resolved = await cache.resolve(lookups(["a"]), up, read=False)
    assert up.calls == [["a"], ["a"]] and resolved.cached == [False]


@pytest.mark.anyio
async def test_a_follower_awaits_the_leaders_flight() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    leader, follower = Upstream(["x", "y"]), Upstream(["y", "z"])
    leader.gate = asyncio.Event()
    first = asyncio.create_task(cache.resolve(lookups(leader.texts), leader))
    await leader.started.wait()
    second = asyncio.create_task(cache.resolve(lookups(follower.texts), follower))
    await follower.started.wait()  # z is computed by the follower; y is awaited
    leader.gate.set()
    one, two = await first, await second
    assert leader.calls == [["x", "y"]] and follower.calls == [["z"]]
    assert two.cached == [True, False] and np.array_equal(two.entries[0].vector, vec("y"))
    assert one.cached == [False, False] and cache.counters.coalesced == 1
    await cache.flush()
    assert len(cache.flights) == 0


@pytest.mark.anyio
async def test_a_backend_failure_fails_each_waiter_with_its_own_error() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    leader = Upstream(["x"])
    leader.gate = asyncio.Event()
    leader.error = UpstreamRateLimited("slow down", retry_after=3.0, status=429)
    first = asyncio.create_task(cache.resolve(lookups(["x"]), leader))
    await leader.started.wait()
    others = [asyncio.create_task(cache.resolve(lookups(["x"]), Upstream(["x"]))) for _ in range(2)]
    await asyncio.sleep(0)
    leader.gate.set()
    errors = await asyncio.gather(first, *others, return_exceptions=True)
    assert errors[0] is leader.error
    for error in errors[1:]:
        assert isinstance(error, UpstreamRateLimited) and error is not leader.error
        assert error.message == "slow down" and error.retry_after == 3.0 and error.status == 429
    assert errors[1] is not errors[2]
    assert len(cache.flights) == 0  # the next request starts afresh
    again = Upstream(["x"])
    await cache.resolve(lookups(["x"]), again)
    assert again.calls == [["x"]]


@pytest.mark.anyio
async def test_an_invalid_input_of_the_leader_hands_the_flight_over() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    leader = Upstream(["bad", "x"])
    leader.gate = asyncio.Event()
    leader.error = InvalidInput("input[0] is too long", param="input[0]")
    first = asyncio.create_task(cache.resolve(lookups(leader.texts), leader))
    await leader.started.wait()
    follower = Upstream(["x"])
    second = asyncio.create_task(cache.resolve(lookups(follower.texts), follower))
    await asyncio.sleep(0)
    leader.gate.set()
    with pytest.raises(InvalidInput):
        await first
    resolved = await second
    assert follower.calls == [["x"]] and resolved.cached == [False]


@pytest.mark.anyio
async def test_a_cancelled_leader_does_not_strand_its_followers() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    leader = Upstream(["x"])
    leader.gate = asyncio.Event()
    first = asyncio.create_task(cache.resolve(lookups(["x"]), leader))
    await leader.started.wait()
    followers = [Upstream(["x"]) for _ in range(3)]
    tasks = [asyncio.create_task(cache.resolve(lookups(["x"]), f)) for f in followers]
    await asyncio.sleep(0)
    first.cancel()
    results = await asyncio.gather(*tasks)
    # One follower took the flight over; the others awaited it.
    assert sorted(len(f.calls) for f in followers) == [0, 0, 1]
    assert sorted(r.cached[0] for r in results) == [False, True, True]
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.anyio
async def test_a_cancelled_follower_leaves_the_flight_alone() -> None:
    cache = EmbeddingCache(MemoryBackend(max_bytes=1 << 20))
    leader = Upstream(["x"])
    leader.gate = asyncio.Event()
    first = asyncio.create_task(cache.resolve(lookups(["x"]), leader))
    await leader.started.wait()
    quitter = asyncio.create_task(cache.resolve(lookups(["x"]), Upstream(["x"])))
    stayer = asyncio.create_task(cache.resolve(lookups(["x"]), Upstream(["x"])))
    await asyncio.sleep(0)
    quitter.cancel()
    leader.gate.set()
    assert (await first).cached == [False]
    assert (await stayer).cached == [True]


@pytest.mark.anyio
async def test_a_landed_flight_serves_until_its_write_is_done() -> None:
    class SlowWrites(MemoryBackend):
        gate = asyncio.Event()

        async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
            await self.gate.wait()
            await super().put_many(items)

    backend = SlowWrites(max_bytes=1 << 20)
    cache = EmbeddingCache(backend)
    await cache.resolve(lookups(["x"]), Upstream(["x"]))
    later = Upstream(["x"])
    resolved = await cache.resolve(lookups(["x"]), later)
    assert later.calls == [] and resolved.cached == [True]
    backend.gate.set()
    await cache.flush()
    assert len(cache.flights) == 0 and await backend.get_many(lookups(["x"])[0]) != [None]


@pytest.mark.anyio
async def test_backend_faults_degrade_to_computing(caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(BrokenBackend())
    up = Upstream(["a", "b"])
    resolved = await cache.resolve(lookups(up.texts), up)
    await cache.flush()
    assert up.calls == [["a", "b"]] and resolved.cached == [False, False]
    assert cache.counters.errors == {"read": 1, "write": 1}
    assert "embedding cache (memory) read failed" in caplog.text
    assert "disk on fire" in caplog.text


@pytest.mark.anyio
async def test_a_hung_read_is_a_miss() -> None:
    class Hung(MemoryBackend):
        in_process = False  # it waits on something, so reads are timed

        async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
            await asyncio.Event().wait()
            return []

    cache = EmbeddingCache(Hung(max_bytes=1 << 20), read_timeout_s=0.01)
    up = Upstream(["a"])
    resolved = await cache.resolve(lookups(["a"]), up)
    assert up.calls == [["a"]] and resolved.cached == [False] and cache.counters.errors["read"] == 1


@pytest.mark.anyio
async def test_a_second_namespace_is_read_and_the_served_one_written() -> None:
    backend = MemoryBackend(max_bytes=1 << 20)
    cache = EmbeddingCache(backend)
    primary, fallback = b"p" * 32, b"f" * 32
    from gateway.cache import encode_entry

    await backend.put_many([(fallback, encode_entry(Entry(vector=vec("q"), tokens=1)))])
    up = Upstream(["q"])
    resolved = await cache.resolve([[primary, fallback]], up)
    assert up.calls == [] and resolved.found_in == [1]

    async def served_by_fallback(positions: list[int], deliver: Deliver) -> None:
        deliver(positions, [Entry(vector=vec("r"), tokens=1)], 1)

    await cache.resolve([[b"r" * 32, b"s" * 32]], served_by_fallback)
    await cache.flush()
    assert await backend.get_many([b"r" * 32, b"s" * 32]) == [None, encode_entry(Entry(vector=vec("r"), tokens=1))]


@pytest.mark.anyio
async def test_unprovable_exception_classes_still_copy() -> None:
    from gateway.cache.flights import own_copy

    class Odd(ProviderUnavailable):
        def __init__(self, message: str, *, needed: int) -> None:
            super().__init__(message)
            self.needed = needed

    fresh = own_copy(Odd("gone", needed=1))
    assert isinstance(fresh, ProviderUnavailable) and str(fresh) == "gone"


def test_a_batch_total_is_shared_out_exactly() -> None:
    from gateway.caching import split_tokens
    from providers.base import EmbeddingResult

    chunk = ["a", "a much longer input with many more words in it", "1 2", "xyz"]
    for total in (0, 3, 4, 5, 17, 1000):
        result = EmbeddingResult(vectors=np.zeros((4, 2), np.float32), token_counts=[], prompt_tokens=total)
        shares, estimated = split_tokens(result, chunk)
        assert sum(shares) == total and estimated
        if total >= 4:
            assert min(shares) >= 1 and shares[1] == max(shares)
    exact = EmbeddingResult(vectors=np.zeros((2, 2), np.float32), token_counts=[3, 4])
    assert split_tokens(exact, ["x", "y"]) == ([3, 4], False)
    one = EmbeddingResult(vectors=np.zeros((1, 2), np.float32), token_counts=[], prompt_tokens=9)
    assert split_tokens(one, ["x"]) == ([9], False)
