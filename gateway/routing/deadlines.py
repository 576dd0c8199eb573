"""Time limits on upstream calls, enforced by one shared timer.

``asyncio.timeout`` arms an event-loop timer for every call it guards and disarms it
afterwards (on uvloop a libuv timer started and stopped): about 20,000 CPU instructions,
a visible share of what the gateway adds to a request. A :class:`DeadlineWatch` instead
keeps the calls in flight in a dict; one timer, armed only while calls are watched,
wakes every ``resolution_s`` and cancels the tasks whose time is up. A limit is thus
enforced up to ``resolution_s`` late, which is nothing next to limits of seconds.

The cancellation is asyncio's own: the watched task gets ``cancel()``, and the call that
started the watch turns the ``CancelledError`` back into :class:`TimeoutError` only when
the watch caused it (the ``uncancel`` bookkeeping ``asyncio.timeout`` does), so a
cancellation from elsewhere (shutdown, a client gone) still propagates as one.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["DEFAULT_RESOLUTION_S", "DeadlineWatch", "Limit"]

DEFAULT_RESOLUTION_S = 0.01


class Limit:
    """One watched call: use as ``with watch.limit(seconds):`` around the awaited call."""

    __slots__ = ("_watch", "_task", "when", "_cancelling", "expired")

    def __init__(self, watch: DeadlineWatch, task: asyncio.Task[object], when: float) -> None:
        self._watch = watch
        self._task = task
        self.when = when
        self._cancelling = task.cancelling()
        self.expired = False

    def __enter__(self) -> Limit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._watch._forget(self)
        if self.expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()


class DeadlineWatch:
    """Cancels the calls of this event loop that outlive their limit (create one per loop user)."""

    def __init__(self, resolution_s: float = DEFAULT_RESOLUTION_S) -> None:
        self.resolution_s = resolution_s
        self._watched: dict[Limit, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def limit(self, seconds: float) -> Limit:
        """A limit of ``seconds`` from now on the current task's call; raises
        :class:`TimeoutError` out of its ``with`` block when it ran out."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        entry = Limit(self, task, loop.time() + seconds)
        self._watched[entry] = None
        if self._timer is None or loop is not self._loop:
            # (A watch moved to a new loop, as an app does between test clients, starts over.)
            self._loop = loop
            self._timer = loop.call_later(self.resolution_s, self._check, loop)
        return entry

    def _forget(self, entry: Limit) -> None:
        self._watched.pop(entry, None)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return
        self._timer = None
        now = loop.time()
        for entry in [e for e in self._watched if e.when <= now]:
            del self._watched[entry]
            entry._expire()
        if self._watched:
            self._timer = loop.call_later(self.resolution_s, self._check, loop)
