"""The interface every cache backend implements: bytes in, bytes out, many at a time.

Keys are :data:`~gateway.cache.keys.KEY_BYTES`-byte digests; values are encoded entries
(:mod:`gateway.cache.entry`). A backend may raise anything on a fault (a locked database, a
Redis that went away): :class:`~gateway.cache.cache.EmbeddingCache` turns every failure into
a miss or a skipped write, logs it and counts it, so no request fails for its cache.
"""

from __future__ import annotations

from typing import Protocol, Sequence

__all__ = ["CacheBackend"]


class CacheBackend(Protocol):
    """A store of encoded vectors; ``ttl_s`` (0: never) is given at construction."""

    #: What the backend is, for logs and metrics (``memory``, ``sqlite``, ``redis``).
    kind: str
    #: Answers from this process's memory without waiting on anything: no read timer needed.
    in_process: bool

    async def start(self) -> None: ...

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The value stored under each key, or None (absent or expired), in key order."""
        ...

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...

    @property
    def size_bytes(self) -> int | None:
        """Bytes held, where the backend can tell cheaply (None: it cannot)."""
        ...

    @property
    def evictions(self) -> int:
        """Entries dropped to stay within the size bound, since start."""
        ...

    async def aclose(self) -> None: ...
