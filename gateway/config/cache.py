"""The ``cache:`` section: which backend holds embeddings, how much, how long, for whom."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.reader import Reader

__all__ = ["CACHE_SCOPES", "CacheConfig", "DEFAULT_CACHE_MAX_BYTES", "parse_cache"]

DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024
CACHE_SCOPES = ("global", "key")
_KEYS = ("backend", "max_bytes", "ttl_s", "scope")


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """``backend``: ``memory``, ``sqlite:///PATH``, ``redis`` (the ``state`` server) or ``off``."""

    backend: str = "off"
    #: The memory backend's bound (an LRU): bytes of vectors and their bookkeeping.
    max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    #: Seconds a vector is kept; 0: forever (the same model and input give the same vector).
    ttl_s: float = 0.0
    #: ``global``: every key shares hits; ``key``: a key only sees its own.
    scope: str = "global"

    @property
    def enabled(self) -> bool:
        return self.backend != "off"


def parse_cache(reader: Reader, *, state: str | None) -> CacheConfig:
    """``cache:`` read at ``reader``; an absent section is no cache, a present one defaults
    to the memory backend. ``state`` is the top-level ``state`` URL (for ``redis``)."""
    reader.reject_unknown(_KEYS)
    if reader.node.get("backend") is False:  # YAML reads a bare `off` as false
        reader.node["backend"] = "off"
    backend = reader.string("backend", "memory")
    if backend not in ("memory", "redis", "off") and not str(backend).startswith("sqlite:///"):
        reader.error("backend", f"must be memory, sqlite:///PATH, redis or off, not {backend!r}")
    elif backend == "sqlite:///":
        reader.error("backend", "sqlite:/// needs a file path, such as sqlite:///gateway-cache.db")
    elif backend == "redis" and state is None:
        reader.error("backend", "redis keeps the cache on the `state` server: set `state: redis://HOST:PORT/DB`")
    return CacheConfig(
        backend=backend or "off",
        max_bytes=reader.integer("max_bytes", DEFAULT_CACHE_MAX_BYTES, minimum=1024),
        ttl_s=reader.number("ttl_s", 0.0),
        scope=reader.string("scope", "global", choices=CACHE_SCOPES),
    )
