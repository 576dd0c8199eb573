"""In-flight coalescing: one flight per key, whatever the number of requests asking.

The first request to need a key leads its flight; a request needing the same key meanwhile
follows it and awaits the outcome instead of asking a backend again. A landed flight stays
findable until its vector is stored, so no request falls between the flight and the store.

How a flight can end for its followers:

- landed: each follower gets the entry;
- failed for the backend's reasons (a :class:`~providers.base.ProviderError` that is not
  :class:`~providers.base.InvalidInput`): each follower raises its own copy of the error,
  never the leader's object (an exception raised in two tasks shares its traceback);
- abandoned (the leader was cancelled, or failed for its own reasons, such as another
  input of its request being invalid): the followers take over, one of them leading a new
  flight. A leader leaving never strands its followers.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass

from gateway.cache.entry import Entry
from providers.base import ProviderUnavailable, UpstreamResponseError

__all__ = ["Flight", "FlightAbandoned", "Flights", "own_copy"]


class FlightAbandoned(Exception):
    """The leader left without an answer: the follower must compute the input itself."""


@dataclass(slots=True)
class _Outcome:
    entry: Entry | None = None
    error: BaseException | None = None


class Flight:
    """One key being computed; followers await :meth:`wait`."""

    __slots__ = ("key", "_future", "followers")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self.followers = 0

    @property
    def done(self) -> bool:
        return self._future.done()

    def land(self, entry: Entry) -> None:
        if not self._future.done():
            self._future.set_result(_Outcome(entry=entry))

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_result(_Outcome(error=error))

    def abandon(self) -> None:
        if not self._future.done():
            self._future.set_result(_Outcome())

    async def wait(self) -> Entry:
        """The entry, or the follower's own copy of the leader's error, or
        :class:`FlightAbandoned`. Cancelling a follower leaves the flight alone."""
        outcome = await asyncio.shield(self._future)
        if outcome.entry is not None:
            return outcome.entry
        if outcome.error is not None:
            raise own_copy(outcome.error)
        raise FlightAbandoned()


class Flights:
    """The flights of one process, by key."""

    def __init__(self) -> None:
        self._flights: dict[bytes, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: bytes) -> Flight | None:
        return self._flights.get(key)

    def claim(self, key: bytes) -> tuple[Flight, bool]:
        """The key's flight and whether the caller leads it (a new flight) or follows."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.followers += 1
            return flight, False
        flight = Flight(key)
        self._flights[key] = flight
        return flight, True

    def release(self, flight: Flight) -> None:
        """Forget ``flight`` (once stored, failed or abandoned); a newer flight is kept."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]


def own_copy(error: BaseException) -> BaseException:
    """A fresh exception equal to ``error`` (same class, message and attributes), with no
    traceback, so each waiter raises an object of its own."""
    try:
        fresh = copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        cls = ProviderUnavailable if isinstance(error, ProviderUnavailable) else UpstreamResponseError
        return cls(str(error))
    fresh.__traceback__ = None
    fresh.__context__ = fresh.__cause__ = None
    return fresh
