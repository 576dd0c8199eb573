"""The one pooled Redis client of a gateway process, with bounded waits and a health flag.

Every command goes through :meth:`SharedState.run`, which bounds it in time and turns any
Redis or socket failure into :class:`StateUnavailable`. After a failure the client is
considered down for ``retry_after_s``: commands fail at once instead of each waiting out a
connect timeout, so a dead or black-holed Redis costs requests nothing but the fallback
(rate limits fail open or closed, circuits stay local). One line is logged when the state
server goes away and one when it comes back; :attr:`errors` counts every failure per
operation for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.config import StateConfig

__all__ = ["SharedState", "StateUnavailable"]

logger = logging.getLogger("gateway.state")

T = TypeVar("T")

DEFAULT_SOCKET_TIMEOUT_S = 0.25
DEFAULT_CONNECT_TIMEOUT_S = 0.25
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_MAX_CONNECTIONS = 64


class StateUnavailable(Exception):
    """The state server could not answer in time (down, unreachable, or refusing)."""


class SharedState:
    """The pooled client (hiredis parser when installed) and its health.

    ``socket_timeout_s`` bounds each read, ``connect_timeout_s`` each connect, and a whole
    command (waiting for a pooled connection included) is bounded by their sum. No command
    is retried by the client: the caller's fallback is cheaper than a second wait.
    """

    def __init__(
        self,
        config: StateConfig,
        *,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.prefix = config.prefix
        self.failure_mode = config.failure
        self._timeout_s = socket_timeout_s + connect_timeout_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        pool = redis.BlockingConnectionPool.from_url(
            config.url,
            max_connections=max_connections,
            timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self.client: redis.Redis = redis.Redis(connection_pool=pool)
        self._down_until = 0.0
        self._down = False
        #: Failures per operation (``ratelimit``, ``circuits``, ...), for ``/metrics``.
        self.errors: dict[str, int] = {}
        #: Requests admitted without a rate-limit check while the server was down (fail open).
        self.unchecked = 0

    @property
    def up(self) -> bool:
        """False from a failure until a later command succeeds."""
        return not self._down

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def run(self, op: str, command: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """``await command(client)`` within the time bound; raises :class:`StateUnavailable`."""
        if self._down and self._clock() < self._down_until:
            self.errors[op] = self.errors.get(op, 0) + 1
            raise StateUnavailable(f"the state server {self.config.display} is down")
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await command(self.client)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            self._failed(op, exc)
            raise StateUnavailable(f"the state server {self.config.display} did not answer: {type(exc).__name__}") from exc
        if self._down:
            self._down = False
            logger.warning("state server %s is reachable again", self.config.display)
        return result

    async def ping(self) -> bool:
        try:
            await self.run("ping", lambda client: client.ping())
        except StateUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except (redis.RedisError, OSError):
            pass

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors[op] = self.errors.get(op, 0) + 1
        self._down_until = self._clock() + self._retry_after_s
        if not self._down:
            self._down = True
            logger.error(
                "STATE DOWN: the state server %s failed (%s: %s); rate limits fail %s, circuits are "
                "local to this process until it answers again",
                self.config.display, type(exc).__name__, exc or "no answer in time", self.failure_mode,
            )
