"""The cache a config asks for, built from its ``cache:`` section."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cache.backend import CacheBackend
from gateway.cache.cache import EmbeddingCache
from gateway.cache.memory import MemoryBackend
from gateway.cache.sqlite import SQLiteBackend, sqlite_path
from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["build_cache"]


def build_cache(config: GatewayConfig, *, redis_client: Redis | None = None) -> EmbeddingCache | None:
    """The configured cache, or None when ``cache.backend`` is ``off`` (or absent).

    ``redis_client`` is the shared state's pooled client (:mod:`gateway.state.client`);
    without one, a client is made from the ``state`` URL. Keys go under the state's prefix.
    """
    settings = config.cache
    backend: CacheBackend
    if not settings.enabled:
        return None
    if settings.backend == "memory":
        backend = MemoryBackend(max_bytes=settings.max_bytes, ttl_s=settings.ttl_s)
    elif settings.backend.startswith("sqlite:///"):
        backend = SQLiteBackend(sqlite_path(settings.backend), ttl_s=settings.ttl_s)
    else:
        from gateway.cache.redis import DEFAULT_PREFIX, RedisBackend

        state = config.state
        if redis_client is None:
            from redis.asyncio import Redis as Client

            url = state.url if state is not None else ""
            redis_client = Client.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        prefix = (state.prefix + "cache:").encode() if state is not None else DEFAULT_PREFIX
        backend = RedisBackend(redis_client, ttl_s=settings.ttl_s, prefix=prefix)
    return EmbeddingCache(backend)
