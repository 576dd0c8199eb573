"""The embedding cache's hit-path shortcuts, each against the plain way (see bench/shortcuts.py).

A fully cached request of 32 texts through one deployment: its keys, its read and decode,
and the naming of where it was served from. Where the plain way is code the gateway no
longer has, it is copied here; keep it in step when the function changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import types
from typing import Any, Sequence

import numpy as np

from bench.shortcuts import Case, Run, run_loop
from gateway.cache import EmbeddingCache, Entry, MemoryBackend, Namespace, encode_entry, namespace
from gateway.cache.cache import Deliver
from gateway.cache.entry import _ESTIMATED, _HEADER, _VERSION, decode_entries
from gateway.cache.keys import _TEXT, KEY_BYTES
from gateway.caching import _lookups

__all__ = ["cases"]

TEXTS = [f"text number {i}: the quick brown fox jumps over the lazy dog" for i in range(32)]


def _space() -> Namespace:
    made = namespace(deployment="one", provider="openai", model="fake-embed", space="fake", settings={},
                     dimensions=None, input_type=None, options={})
    assert made is not None
    return made


def key_case(space: Namespace) -> Case:
    def plain_key(text: str) -> bytes:
        hasher = hashlib.blake2b(space.digest, digest_size=KEY_BYTES)
        hasher.update(_TEXT)
        hasher.update(text.encode("utf-8", "surrogatepass"))
        return hasher.digest()

    assert [plain_key(t) for t in TEXTS] == [space.key(t) for t in TEXTS]
    return Case("cache keys: primed hasher copied", "gateway/cache/keys.py Namespace.key",
                run_loop(lambda: [plain_key(t) for t in TEXTS]), run_loop(lambda: [space.key(t) for t in TEXTS]),
                "request (32 texts)")


def lookups_case(space: Namespace) -> Case:
    spaces, decodes = [space], [False]

    def paired() -> list[list[bytes]]:
        return [[s.key(item) for s, _ in zip(spaces, decodes)] for item in TEXTS]

    assert paired() == _lookups(spaces, decodes, list(TEXTS), None)
    return Case("cache keys: one namespace, no pairing", "gateway/caching.py _lookups",
                run_loop(paired), run_loop(lambda: _lookups(spaces, decodes, list(TEXTS), None)),
                "request (32 texts)")


def _decode_each(raws: Sequence[bytes]) -> list[Entry | None]:
    """The plain way: one ``frombuffer`` and one header unpack per value."""
    found: list[Entry | None] = [None] * len(raws)
    by_width: dict[int, list[int]] = {}
    for index, raw in enumerate(raws):
        body = len(raw) - _HEADER.size
        if body > 0 and not body % 4 and raw[0] == _VERSION:
            by_width.setdefault(body // 4, []).append(index)
    for indices in by_width.values():
        vectors = [np.frombuffer(raws[i], dtype="<f4", offset=_HEADER.size) for i in indices]
        finite = np.isfinite(np.add.reduce(vectors, axis=1))
        for row, index in enumerate(indices):
            if finite[row]:
                _, flags, tokens = _HEADER.unpack_from(raws[index])
                found[index] = Entry(vector=vectors[row], tokens=tokens, estimated=bool(flags & _ESTIMATED))
    return found


def decode_case() -> Case:
    rng = np.random.default_rng(0)
    raws = [encode_entry(Entry(rng.standard_normal(1024).astype(np.float32), 10 + i, bool(i % 2))) for i in range(32)]
    for a, b in zip(_decode_each(raws), decode_entries(raws)):
        assert a is not None and b is not None
        assert np.array_equal(a.vector, b.vector) and (a.tokens, a.estimated) == (b.tokens, b.estimated)
    return Case("cache decode: one matrix per width", "gateway/cache/entry.py decode_entries",
                run_loop(lambda: _decode_each(raws)), run_loop(lambda: decode_entries(raws)), "request (32 hits)")


def served_from_case() -> Case:
    deployment = types.SimpleNamespace(config=types.SimpleNamespace(name="one", provider="openai", model="m"))
    by_name = {"one": deployment}
    spaces = [_space()]
    found_in = [0] * 32

    def named(used: list[Any]) -> tuple[str, str, str]:
        return (",".join(dict.fromkeys(d.config.name for d in used)),
                ",".join(dict.fromkeys(d.config.provider for d in used)),
                ",".join(dict.fromkeys(d.config.model or "" for d in used)))

    return Case("cache: served-from deduplicated first", "gateway/caching.py CachedRequest._served",
                run_loop(lambda: named([by_name[spaces[i].deployment] for i in found_in if i >= 0])),
                run_loop(lambda: named([by_name[spaces[i].deployment] for i in dict.fromkeys(found_in) if i >= 0])),
                "request (32 hits)")


class _EveryInputFlies(EmbeddingCache):
    """The plain way: every input claims a flight, read or not (as for a remote backend)."""

    async def _read_free(self, positions: list[int], *args: Any) -> tuple[list[int], set[int]]:
        return positions, set()


def hits_case(loop: asyncio.AbstractEventLoop, space: Namespace) -> Case:
    lookups = [[space.key(t)] for t in TEXTS]
    rng = np.random.default_rng(1)
    values = [(k[0], encode_entry(Entry(rng.standard_normal(1024).astype(np.float32), 12))) for k in lookups]

    async def compute(positions: list[int], deliver: Deliver) -> None:
        raise AssertionError("every input is cached")

    def resolving(cache: EmbeddingCache) -> Run:
        loop.run_until_complete(cache.backend.put_many(values))

        async def work(n: int) -> None:
            for _ in range(n):
                resolved = await cache.resolve(lookups, compute)
                assert all(resolved.cached)

        def run(n: int) -> float:
            started = loop.time()
            loop.run_until_complete(work(n))
            return loop.time() - started

        return run

    plain = resolving(_EveryInputFlies(MemoryBackend(max_bytes=1 << 26)))
    fast = resolving(EmbeddingCache(MemoryBackend(max_bytes=1 << 26)))
    return Case("cache hits: no flights (memory backend)", "gateway/cache/cache.py EmbeddingCache._read_free",
                plain, fast, "request (32 hits)")


def cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    space = _space()
    return [key_case(space), lookups_case(space), decode_case(), served_from_case(), hits_case(loop, space)]
