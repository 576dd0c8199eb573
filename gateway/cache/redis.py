"""The shared backend: vectors in Redis, through a ``redis.asyncio.Redis`` client.

The client is the one the gateway's shared state uses (``state:`` in the config), so workers
and replicas share one cache. Reads are one ``MGET``; writes one pipelined round of
``SET key value [PX ttl]``. Eviction is Redis's own business (``maxmemory-policy``); the
counters here report what this process can see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

__all__ = ["DEFAULT_PREFIX", "RedisBackend"]

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Every cache key in Redis starts with this, so the cache never meets other state's keys.
DEFAULT_PREFIX = b"egw:cache:"


class RedisBackend:
    """Vectors in Redis; the client is owned by whoever made it (not closed here)."""

    kind = "redis"
    in_process = False

    def __init__(self, client: Redis, *, ttl_s: float = 0.0, prefix: bytes = DEFAULT_PREFIX) -> None:
        self._client = client
        self.ttl_s = ttl_s
        self._prefix = prefix

    @property
    def size_bytes(self) -> int | None:
        return None

    @property
    def evictions(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        prefix = self._prefix
        values = await self._client.mget([prefix + key for key in keys])
        return [v if isinstance(v, bytes) else None for v in values]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if not items:
            return
        ttl_ms = int(self.ttl_s * 1000) if self.ttl_s else None
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(self._prefix + key, value, px=ttl_ms)
            await pipe.execute()

    async def aclose(self) -> None:
        return None
