"""The embedding cache as the pipeline sees it: resolve a request's unique inputs.

For each unique input the caller gives its lookup keys (one per deployment namespace the
alias may be served from, in routing order; the first is also the flight key) and a
``compute`` function that embeds the inputs nobody has. :meth:`EmbeddingCache.resolve`
then

1. joins the flights already under way for these inputs, and leads new ones for the rest;
2. reads the backend for the inputs it leads (unless the request said ``no-cache``);
3. calls ``compute`` for what is still missing; each batch that comes back lands its
   flights at once (followers proceed) and is stored in the background;
4. awaits the flights it follows, taking over any whose leader left.

A backend fault is never a request's fault: a failed read is a miss, a failed write is
skipped; both are logged (once per burst) and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from gateway.cache.backend import CacheBackend
from gateway.cache.entry import Entry, decode_entries, encode_entry
from gateway.cache.flights import Flight, FlightAbandoned, Flights
from providers.base import InvalidInput, ProviderError

__all__ = ["CacheCounters", "Compute", "Deliver", "EmbeddingCache", "Resolved"]

logger = logging.getLogger("gateway.cache")

#: A read that takes longer than this counts as a miss (a hung Redis must not hang requests).
DEFAULT_READ_TIMEOUT_S = 1.0
#: After a logged failure, further failures of the same operation are only counted for this long.
_LOG_EVERY_S = 10.0

#: ``deliver(positions, entries, namespace_index)``: a batch the backend embedded; positions
#: index the unique inputs; ``namespace_index`` is the served namespace's place in each
#: input's lookup keys (None: that deployment's answers are not cacheable).
Deliver = Callable[[Sequence[int], Sequence[Entry], "int | None"], None]
Compute = Callable[[list[int], Deliver], Awaitable[None]]


@dataclass(slots=True)
class CacheCounters:
    """Totals since start, read by the metrics at scrape time."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    stored: int = 0
    stored_bytes: int = 0
    read_bytes: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {"read": 0, "write": 0})


@dataclass(slots=True)
class Resolved:
    """Every unique input's entry, and whether a backend computed it for this request."""

    entries: list[Entry]
    #: True where the vector came from the cache or another request's flight.
    cached: list[bool]
    #: The lookup namespace index each cached entry was read from (-1: not read).
    found_in: list[int]


class EmbeddingCache:
    """Reads, coalesces and stores vectors in front of one backend."""

    def __init__(self, backend: CacheBackend, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        self.backend = backend
        self.read_timeout_s = read_timeout_s
        self.flights = Flights()
        self.counters = CacheCounters()
        self._writes: set[asyncio.Task[None]] = set()
        #: Inputs of requests awaiting another request's flight right now.
        self.waiting = 0
        self._last_logged: dict[str, float] = {}

    @property
    def kind(self) -> str:
        return self.backend.kind

    async def start(self) -> None:
        try:
            await self.backend.start()
        except Exception as exc:  # a cache that cannot open serves as a cache that always misses
            self._failed("start", exc)

    async def aclose(self) -> None:
        """Waits for the writes under way, then closes the backend."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        try:
            await self.backend.aclose()
        except Exception as exc:
            self._failed("close", exc)

    async def flush(self) -> None:
        """Returns once every write started so far has finished (or failed)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def resolve(
        self, lookups: Sequence[Sequence[bytes]], compute: Compute, *, read: bool = True
    ) -> Resolved:
        count = len(lookups)
        entries: list[Entry | None] = [None] * count
        cached = [False] * count
        found_in = [-1] * count
        if not read:
            # no-cache: fresh vectors for this request, still stored; no flight is joined.
            self.counters.misses += count
            await self._compute(list(range(count)), lookups, compute, entries, {})
            return Resolved(entries=_all(entries), cached=cached, found_in=found_in)
        pending = list(range(count))
        unread: set[int] = set()
        if self.backend.in_process:
            # Its read never suspends, so nothing can start or land a flight between the read
            # and the claims below: hits need no flight, and only the misses claim one.
            pending, unread = await self._read_free(pending, lookups, entries, cached, found_in)
        while pending:
            led: dict[int, Flight] = {}
            followed: dict[int, Flight] = {}
            for position in pending:
                flight, leads = self.flights.claim(lookups[position][0])
                (led if leads else followed)[position] = flight
            try:
                if led:
                    await self._lead(led, lookups, compute, entries, cached, found_in, unread)
                    unread = set()
            except BaseException as exc:
                self._end_flights(led, exc)
                raise
            self._end_flights(led, None)  # a flight compute did not deliver must not strand anyone
            pending = []
            left = len(followed)
            self.waiting += left
            try:
                for position, flight in followed.items():
                    try:
                        entries[position] = await flight.wait()
                    except FlightAbandoned:
                        pending.append(position)
                        continue
                    finally:
                        left -= 1
                        self.waiting -= 1
                    cached[position] = True
                    self.counters.coalesced += 1
            finally:
                self.waiting -= left
        return Resolved(entries=_all(entries), cached=cached, found_in=found_in)

    async def _lead(
        self,
        led: dict[int, Flight],
        lookups: Sequence[Sequence[bytes]],
        compute: Compute,
        entries: list[Entry | None],
        cached: list[bool],
        found_in: list[int],
        unread: set[int],
    ) -> None:
        """Reads the backend for the inputs whose flights ``led`` holds (except those in
        ``unread``, just read and missed), lands the hits and computes the rest."""
        missing = [p for p in led if p in unread]
        positions = [p for p in led if p not in unread]
        found = await self._read([lookups[p] for p in positions]) if positions else []
        for position, hit in zip(positions, found):
            if hit is None:
                missing.append(position)
                continue
            entry, where = hit
            entries[position], cached[position], found_in[position] = entry, True, where
            flight = led[position]
            flight.land(entry)
            self.flights.release(flight)
        self.counters.hits += len(led) - len(missing)
        self.counters.misses += len(missing)
        if missing:
            missing.sort()
            await self._compute(missing, lookups, compute, entries, led)

    async def _read_free(
        self,
        positions: list[int],
        lookups: Sequence[Sequence[bytes]],
        entries: list[Entry | None],
        cached: list[bool],
        found_in: list[int],
    ) -> tuple[list[int], set[int]]:
        """Reads the inputs no flight holds and keeps the hits; returns what is left for
        flights (in order) and which of those were read and missed."""
        flights = self.flights
        free = [p for p in positions if flights.get(lookups[p][0]) is None]
        found = await self._read([lookups[p] for p in free]) if free else []
        missed: set[int] = set()
        for position, hit in zip(free, found):
            if hit is None:
                missed.add(position)
            else:
                entries[position], cached[position], found_in[position] = hit[0], True, hit[1]
        hits = len(free) - len(missed)
        self.counters.hits += hits
        if not hits:
            return positions, missed
        return [p for p in positions if entries[p] is None], missed

    async def _compute(
        self,
        positions: list[int],
        lookups: Sequence[Sequence[bytes]],
        compute: Compute,
        entries: list[Entry | None],
        led: dict[int, Flight],
    ) -> None:
        def deliver(done: Sequence[int], fresh: Sequence[Entry], namespace_index: int | None) -> None:
            items: list[tuple[bytes, bytes]] = []
            landed: list[Flight] = []
            for position, entry in zip(done, fresh):
                entries[position] = entry
                flight = led.get(position)
                if flight is not None:
                    flight.land(entry)
                    landed.append(flight)
                if namespace_index is not None:
                    items.append((lookups[position][namespace_index], encode_entry(entry)))
            self._store(items, landed)

        await compute(positions, deliver)

    def _end_flights(self, led: dict[int, Flight], exc: BaseException | None) -> None:
        """The leader is leaving with flights unlanded: fail them when the backend is at
        fault (followers would only meet the same fault), else hand them over."""
        shared = isinstance(exc, ProviderError) and not isinstance(exc, InvalidInput)
        for flight in led.values():
            if flight.done:
                continue
            if shared and exc is not None:
                flight.fail(exc)
            else:
                flight.abandon()
            self.flights.release(flight)

    async def _read(self, lookups: Sequence[Sequence[bytes]]) -> list[tuple[Entry, int] | None]:
        """Each input's entry and the namespace index it was found under, or None."""
        found: list[tuple[Entry, int] | None] = [None] * len(lookups)
        keys = [key for keys in lookups for key in keys]
        try:
            if self.backend.in_process:  # it cannot hang: no timer needed
                values = await self.backend.get_many(keys)
            else:
                values = await asyncio.wait_for(self.backend.get_many(keys), self.read_timeout_s)
        except Exception as exc:
            self._failed("read", exc)
            return found
        if len(values) != len(keys):
            self._failed("read", ValueError(f"{len(values)} values for {len(keys)} keys"))
            return found
        present = [(at, raw) for at, raw in enumerate(values) if raw is not None]
        decoded = decode_entries([raw for _, raw in present])
        entries: dict[int, Entry] = {}
        for (at, raw), entry in zip(present, decoded):
            if entry is not None:
                entries[at] = entry
                self.counters.read_bytes += len(raw)
        if not entries:
            return found
        at = 0
        for index, input_keys in enumerate(lookups):
            for where in range(len(input_keys)):
                entry = entries.get(at + where)
                if entry is not None:
                    found[index] = (entry, where)
                    break
            at += len(input_keys)
        return found

    def _store(self, items: list[tuple[bytes, bytes]], landed: list[Flight]) -> None:
        """Writes in the background; landed flights stay findable until the write ends."""
        if not items:
            for flight in landed:
                self.flights.release(flight)
            return
        task = asyncio.get_running_loop().create_task(self._write(items, landed))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, items: list[tuple[bytes, bytes]], landed: list[Flight]) -> None:
        try:
            await self.backend.put_many(items)
        except Exception as exc:
            self._failed("write", exc)
        else:
            self.counters.stored += len(items)
            self.counters.stored_bytes += sum(len(value) for _, value in items)
        finally:
            for flight in landed:
                self.flights.release(flight)

    def _failed(self, operation: str, exc: BaseException) -> None:
        errors = self.counters.errors
        errors[operation] = errors.get(operation, 0) + 1
        now = time.monotonic()
        if now - self._last_logged.get(operation, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[operation] = now
            what = "timed out" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else f"{type(exc).__name__}: {exc}"
            logger.error(
                "embedding cache (%s) %s failed (%s); serving without it", self.backend.kind, operation, what
            )


def _all(entries: list[Entry | None]) -> list[Entry]:
    missing = [i for i, e in enumerate(entries) if e is None]
    if missing:
        raise RuntimeError(f"the cache resolved no vector for unique inputs {missing[:5]}")
    return [e for e in entries if e is not None]
