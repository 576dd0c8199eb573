"""The in-process backend: an LRU of encoded vectors bounded by ``max_bytes``.

Each entry is charged its key and value bytes plus :data:`ENTRY_OVERHEAD` for the Python
objects around them, so the bound is on memory actually held, not just on payload. Every
operation runs on the event loop and touches only a dict: nothing blocks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence

__all__ = ["ENTRY_OVERHEAD", "MemoryBackend"]

#: Bytes charged per entry beyond its key and value: two bytes objects' headers (33 each),
#: the ordered dict's slot and link, the (value, expiry) tuple and the expiry float, with
#: the allocator's rounding (measured with tracemalloc in bench/cache.py).
ENTRY_OVERHEAD = 300


class MemoryBackend:
    """An LRU bounded by ``max_bytes``; least recently used entries are evicted first."""

    kind = "memory"
    in_process = True

    def __init__(self, *, max_bytes: int, ttl_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._evictions = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def evictions(self) -> int:
        return self._evictions

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        return None

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        entries = self._entries
        now = self._clock() if self.ttl_s else 0.0
        found: list[bytes | None] = []
        for key in keys:
            held = entries.get(key)
            if held is None:
                found.append(None)
            elif held[1] and held[1] <= now:
                self._drop(key)
                found.append(None)
            else:
                entries.move_to_end(key)
                found.append(held[0])
        return found

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        expires = self._clock() + self.ttl_s if self.ttl_s else 0.0
        entries = self._entries
        for key, value in items:
            cost = len(key) + len(value) + ENTRY_OVERHEAD
            if cost > self.max_bytes:
                continue
            if key in entries:
                self._drop(key)
            entries[key] = (value, expires)
            self._bytes += cost
        while self._bytes > self.max_bytes:
            oldest = next(iter(entries))
            self._drop(oldest)
            self._evictions += 1

    def _drop(self, key: bytes) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD

    async def aclose(self) -> None:
        self._entries.clear()
        self._bytes = 0
