"""Circuit states shared through Redis: an upstream that fails for one process is skipped by all.

Each process keeps its own :class:`~gateway.routing.breaker.Breaker` per deployment as the
fast path: a request never waits for Redis to learn whether it may call a deployment.
What is shared are the transitions:

- a breaker that opens here publishes ``SET circuit:<deployment> PX <cooldown>``;
- a breaker that closes here (a success) deletes that key;
- every ``interval_s`` one pipeline of ``PTTL`` per upstream deployment reads the others'
  verdicts: a key with time left opens the local breaker for that long, a key gone before
  the local cooldown ended closes it (someone's probe succeeded).

Why a poll and not a read per request or pub/sub: the poll costs one round trip per second
per process whatever the traffic, keeps Redis off the request path (a slow Redis slows no
request), and needs no long-lived subscription to re-establish after Redis restarts. The
price is that another process learns of an open circuit up to ``interval_s`` late, against
cooldowns of tens of seconds: a few more failed calls, each of which falls back as usual.
PTTL instead of stored timestamps means replicas' clocks never have to agree.

Local models are not shared: one process's model failing says nothing of another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.routing.breaker import Breaker
from gateway.state.client import SharedState, StateUnavailable

__all__ = ["SharedCircuits", "DEFAULT_POLL_INTERVAL_S"]

logger = logging.getLogger("gateway.state.circuits")

DEFAULT_POLL_INTERVAL_S = 1.0


class SharedCircuits:
    """Publishes this process's breaker transitions and adopts the other processes'."""

    def __init__(self, state: SharedState, *, interval_s: float = DEFAULT_POLL_INTERVAL_S) -> None:
        self.state = state
        self.interval_s = interval_s
        self._breakers: dict[str, Breaker] = {}
        self._task: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        #: Polls completed.
        self.polls = 0

    def watch(self, breaker: Breaker) -> None:
        self._breakers[breaker.name] = breaker

    def _key(self, name: str) -> str:
        return self.state.key("circuit", name)

    def changed(self, name: str, state: str) -> None:
        """A local breaker moved to ``state``; publish it unless the move came from Redis."""
        breaker = self._breakers.get(name)
        if breaker is None or breaker.opened_elsewhere or state == "half-open":
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._publish(name, state, breaker.settings.cooldown_s))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, name: str, state: str, cooldown_s: float) -> None:
        key = self._key(name)
        with contextlib.suppress(StateUnavailable):
            if state == "open":
                await self.state.run("circuits", lambda c: c.set(key, b"open", px=max(1, int(cooldown_s * 1000))))
                logger.info("circuit of %s opened here: published to the other processes", name)
            else:
                await self.state.run("circuits", lambda c: c.delete(key))

    async def poll(self) -> None:
        """Reads every watched circuit once and applies what other processes decided."""
        names = list(self._breakers)
        if names:
            async def read(client: object) -> list[int]:
                pipe = self.state.client.pipeline(transaction=False)
                for name in names:
                    pipe.pttl(self._key(name))
                result: list[int] = await pipe.execute()
                return result

            ttls = await self.state.run("circuits", read)
            for name, ttl in zip(names, ttls):
                self._apply(self._breakers[name], int(ttl))
        self.polls += 1

    def _apply(self, breaker: Breaker, ttl_ms: int) -> None:
        if ttl_ms > 0:
            if breaker.state != "open":
                logger.warning("circuit of %s was opened by another process: skipping it here too", breaker.name)
                breaker.open_elsewhere(ttl_ms / 1000.0)
        elif ttl_ms == -2 and breaker.opened_elsewhere and breaker.state == "open":
            breaker.close_elsewhere()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(StateUnavailable):
                await self.poll()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shared-circuits")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._publishing):
            with contextlib.suppress(Exception):
                await task
