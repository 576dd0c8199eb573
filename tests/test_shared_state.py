"""Shared state on a real Redis: atomic rate limits across clients, shared circuits,
and what happens when Redis cannot answer (fail open or closed, never a hang)."""

from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator

import pytest

from gateway.config import KeyConfig, StateConfig
from gateway.errors import RateLimited, ServiceOverloaded
from gateway.routing.breaker import Breaker, BreakerSettings
from gateway.state.circuits import SharedCircuits
from gateway.state.client import SharedState
from gateway.state.ratelimit import SharedRateLimiter
from services import redis_url, unique


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def state_config(url: str | None = None, *, failure: str = "open") -> StateConfig:
    return StateConfig(url=url or redis_url(), failure=failure, prefix=unique("test-") + ":")


@pytest.fixture
async def states() -> AsyncIterator[list[SharedState]]:
    """Two clients with one prefix: two processes' views of one Redis. Their timeouts are
    generous: these tests are about atomicity, and a loaded test machine may take longer
    than the production bound to open 60 connections at once (a timeout would fail open)."""
    config = state_config()
    pair = [SharedState(config, socket_timeout_s=10, connect_timeout_s=10) for _ in range(2)]
    yield pair
    keys = await pair[0].client.keys(config.prefix + "*")
    if keys:
        await pair[0].client.delete(*keys)
    for state in pair:
        await state.aclose()


RPM = KeyConfig(id="app-1", key="k", rpm=20)
TPM = KeyConfig(id="app-2", key="k", rpm=1000, tpm=100)


@pytest.mark.anyio
async def test_two_clients_admit_exactly_the_limit_between_them(states: list[SharedState]) -> None:
    limiters = [SharedRateLimiter(state) for state in states]

    async def one(i: int) -> bool:
        try:
            await limiters[i % 2].admit(RPM, 0)
        except RateLimited:
            return False
        return True

    outcomes = await asyncio.gather(*(one(i) for i in range(60)))
    # 60 concurrent checks through two pools: 20 admitted (+1 if a second of refill passed).
    assert 20 <= sum(outcomes) <= 21


@pytest.mark.anyio
async def test_tokens_and_headers_come_from_redis(states: list[SharedState]) -> None:
    first, second = SharedRateLimiter(states[0]), SharedRateLimiter(states[1])
    decision = await first.admit(TPM, 60)
    assert decision.headers["x-ratelimit-limit-tokens"] == "100"
    assert decision.headers["x-ratelimit-remaining-tokens"] == "40"
    with pytest.raises(RateLimited) as refused:
        await second.admit(TPM, 60)
    assert "100 tokens per minute" in refused.value.message and refused.value.retry_after
    assert "retry-after-ms" in refused.value.headers
    with pytest.raises(RateLimited) as never:
        await second.admit(TPM, 101)
    assert never.value.param == "input"
    # A refund once the real count is known (in the background) makes room again.
    first.adjust_tokens(TPM, -50)
    await asyncio.gather(*first._adjustments)
    assert (await second.admit(TPM, 60)).headers["x-ratelimit-remaining-tokens"] in {"30", "31"}


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_redis_down_fails_open_and_counts_it() -> None:
    state = SharedState(state_config(f"redis://127.0.0.1:{_dead_port()}/0"))
    limiter = SharedRateLimiter(state)
    try:
        for _ in range(3):
            assert (await limiter.admit(RPM, 0)).headers == {}
        assert state.unchecked == 3 and not state.up and state.errors["ratelimit"] == 3
    finally:
        await state.aclose()


@pytest.mark.anyio
async def test_redis_down_fails_closed_when_configured() -> None:
    state = SharedState(state_config(f"redis://127.0.0.1:{_dead_port()}/0", failure="closed"))
    try:
        with pytest.raises(ServiceOverloaded) as refused:
            await SharedRateLimiter(state).admit(RPM, 0)
        assert refused.value.code == "state_unavailable"
    finally:
        await state.aclose()


@pytest.mark.anyio
async def test_a_redis_that_never_answers_does_not_hang_a_request() -> None:
    # A socket that accepts connections and never replies: reads time out, bounded.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    state = SharedState(state_config(f"redis://127.0.0.1:{silent.getsockname()[1]}/0"))
    try:
        decision = await asyncio.wait_for(SharedRateLimiter(state).admit(RPM, 0), timeout=30)
        assert decision.headers == {} and state.unchecked == 1
        # Marked down: the next check does not wait at all; it never touches the socket.
        assert (await SharedRateLimiter(state).admit(RPM, 0)).headers == {}
        assert state.errors["ratelimit"] == 2
    finally:
        await state.aclose()
        silent.close()


@pytest.mark.anyio
async def test_a_circuit_opened_by_one_process_is_seen_by_the_other(states: list[SharedState]) -> None:
    settings = BreakerSettings(failures=1, cooldown_s=30)
    mine, theirs = Breaker("up-1", settings), Breaker("up-1", settings)
    here, there = SharedCircuits(states[0]), SharedCircuits(states[1])
    here.watch(mine)
    there.watch(theirs)
    mine._on_change = here.changed
    theirs._on_change = there.changed
    mine.failed(mine.acquire() or mine.force())
    assert mine.state == "open"
    await asyncio.gather(*here._publishing)
    await there.poll()
    assert theirs.state == "open" and theirs.opened_elsewhere
    assert not there._publishing  # adopting a verdict does not publish it again
    # A success here closes it everywhere before the cooldown is over.
    mine.succeeded(mine.force())
    await asyncio.gather(*here._publishing)
    await there.poll()
    assert theirs.state == "closed"
