"""The usage ledger: one row per request in SQLite or PostgreSQL, written off the event loop.

``record()`` only puts the row on an in-memory queue. One writer thread takes rows off it
in batches (``batch_rows``, or whatever arrived within ``flush_interval_s``) and inserts
each batch in one transaction through a :class:`LedgerStore` (:mod:`gateway.usage.sqlite`,
:mod:`gateway.usage.postgres`; the table is :mod:`gateway.usage.schema`). A failed write
(disk full, database locked or unreachable, table gone) keeps its rows and is retried with
backoff, reconnecting, so a sick database costs memory up to ``max_queue`` rows and never a
request; past that bound new rows are dropped and counted. ``aclose()`` writes everything
still queued before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from gateway.usage.report import LedgerError, ledger_path
from gateway.usage.schema import UsageRecord

__all__ = ["LedgerError", "LedgerStore", "UsageLedger", "UsageRecord", "ledger_path", "open_store"]

logger = logging.getLogger("gateway.usage.ledger")

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_ROWS = 500
DEFAULT_FLUSH_INTERVAL_S = 0.05
DEFAULT_BUSY_TIMEOUT_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 3
#: Write attempts at shutdown before the rows still queued are given up.
CLOSE_ATTEMPTS = 3
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0

class LedgerStore(Protocol):
    """One backend's blocking operations; all but :meth:`query` run on the writer thread."""

    #: Where the rows go, for logs (no password).
    description: str
    #: Whether :meth:`UsageLedger.start` fails when the store cannot be opened (a local
    #: file: a wrong path is a config error) or starts anyway and keeps retrying (a server).
    required_at_start: bool

    def open(self) -> None:
        """Connects and creates or migrates the table; raises :class:`LedgerError`."""

    def write(self, rows: Sequence[UsageRecord]) -> None:
        """Inserts ``rows`` in one transaction; raises anything on failure."""

    def close(self) -> None: ...

    def query(self, start: float | None, end: float | None, group_by: str) -> list[dict[str, Any]]:
        """Usage per group (see :func:`gateway.usage.report.query_usage`), on its own connection."""
        ...


def open_store(url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> LedgerStore:
    """The store for a ledger URL: ``sqlite:///PATH`` or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.usage.postgres import PostgresStore

        return PostgresStore(url, connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S)
    from gateway.usage.sqlite import SqliteStore

    return SqliteStore(ledger_path(url), busy_timeout_s=busy_timeout_s)


@dataclass(eq=False)
class _Marker:
    """A flush or close request travelling through the queue behind the rows before it."""

    done: Callable[[], None]
    closing: bool = False


class UsageLedger:
    def __init__(
        self,
        url: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        """A ledger at ``url`` (``sqlite:///PATH`` or ``postgresql://...``); nothing is opened
        before :meth:`start`.

        ``max_queue`` bounds the rows waiting in memory (queued or being retried);
        ``batch_rows`` and ``flush_interval_s`` decide when a batch is written;
        ``busy_timeout_s`` is how long one write waits for a lock held by another process.
        """
        self.store = open_store(url, busy_timeout_s=busy_timeout_s)
        self._max_queue = max_queue
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[UsageRecord | _Marker] = queue.SimpleQueue()
        #: Set by a flush or close, so the writer does not sleep out its interval.
        self._urgent = threading.Event()
        self._held: list[UsageRecord] = []
        self._connected = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failing = False
        self._backoff_s = _BACKOFF_FIRST_S
        self._written = 0
        self._errors = 0
        self._dropped = 0
        self._pending = 0
        self._lock = threading.Lock()
        self._warned_full = False

    @property
    def rows_written(self) -> int:
        return self._written

    @property
    def rows_dropped(self) -> int:
        return self._dropped

    @property
    def write_errors(self) -> int:
        return self._errors

    @property
    def pending(self) -> int:
        """Rows recorded but not yet written (queued, or held for a retry)."""
        return self._pending

    async def start(self) -> None:
        """Opens the store (creating or migrating the table) and starts the writer; raises
        :class:`LedgerError` when a store that is required at start cannot be opened."""
        if self._thread is not None:
            return
        try:
            await asyncio.to_thread(self.store.open)
            self._connected = True
        except LedgerError as exc:
            if self.store.required_at_start:
                raise
            logger.error("usage ledger %s cannot be opened yet (%s): rows are kept and retried", self.store.description, exc)
            self._failing = True
        self._thread = threading.Thread(target=self._run, name="usage-ledger-writer", daemon=True)
        self._thread.start()

    def record(self, rec: UsageRecord) -> bool:
        """Queues ``rec`` without blocking; ``False`` when it was dropped (queue full or closed)."""
        with self._lock:
            accepted = not self._closed and self._pending < self._max_queue
            if accepted:
                self._pending += 1
                self._queue.put(rec)
            else:
                self._dropped += 1
        if not accepted and not self._warned_full:
            self._warned_full = True
            if self._closed:
                logger.warning("usage ledger is closed: dropping the rows recorded after shutdown")
            else:
                logger.warning(
                    "usage ledger queue is full (%d rows waiting): dropping rows until writes catch up",
                    self._max_queue,
                )
        return accepted

    async def flush(self) -> None:
        """Returns once every row recorded before the call was written, or its write failed."""
        if self._thread is None or self._closed:
            return
        await self._send_marker(closing=False)

    async def aclose(self) -> None:
        """Writes every row still queued (retrying a few times), then closes the database."""
        if self._thread is None or self._closed:
            self._closed = True
            return
        await self._send_marker(closing=True)
        await asyncio.to_thread(self._thread.join)

    async def query(
        self, start: float | None = None, end: float | None = None, group_by: str = "alias"
    ) -> list[dict[str, Any]]:
        """Usage per group over ``[start, end)`` (epoch seconds), rows recorded so far included."""
        await self.flush()
        return await asyncio.to_thread(self.store.query, start, end, group_by)

    async def _send_marker(self, *, closing: bool) -> None:
        """Queues a marker behind every accepted row and waits for the writer to reach it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass

        with self._lock:
            self._closed = self._closed or closing
            self._queue.put(_Marker(wake, closing=closing))
        self._urgent.set()
        await done

    # The writer thread: everything below runs off the event loop.

    def _run(self) -> None:
        while True:
            markers = self._gather()
            closing = any(m.closing for m in markers)
            if closing:
                markers += self._drain()
            if self._held:
                self._write_held()
            if closing:
                self._finish_close()
            for marker in markers:
                marker.done()
            if closing:
                return

    def _gather(self) -> list[_Marker]:
        """Moves rows into ``_held`` until a batch is due; returns the markers met on the way.

        The thread wakes once per batch, not once per row: it blocks for the first row, then
        sleeps out the flush interval (cut short by a flush or close) and takes everything
        queued by then. A wake per row would cost the event loop a GIL hand-off per request.
        """
        if self._failing:
            self._urgent.wait(self._backoff_s)
        elif not self._held:
            first = self._queue.get()
            if isinstance(first, _Marker):
                return [first] + self._drain()
            self._held.append(first)
            self._urgent.wait(self._flush_interval_s)
        self._urgent.clear()
        return self._drain()

    def _drain(self) -> list[_Marker]:
        markers: list[_Marker] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return markers
            if isinstance(item, _Marker):
                markers.append(item)
            else:
                self._held.append(item)

    def _write_held(self) -> bool:
        try:
            if not self._connected:
                self.store.open()
                self._connected = True
            while self._held:
                chunk = self._held[: self._batch_rows]
                self.store.write(chunk)
                del self._held[: len(chunk)]
                self._written += len(chunk)
                with self._lock:
                    self._pending -= len(chunk)
        except Exception as exc:
            self._on_failure(exc)
            return False
        if self._failing:
            logger.warning("usage ledger writes recovered; %d rows written so far", self._written)
        self._failing, self._backoff_s, self._warned_full = False, _BACKOFF_FIRST_S, False
        return True

    def _on_failure(self, exc: Exception) -> None:
        self._errors += 1
        if self._failing:
            self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
        self._failing = True
        cause = exc.__cause__ if isinstance(exc, LedgerError) and exc.__cause__ else exc
        # One line and no traceback; the growing backoff keeps a full disk from flooding the log.
        logger.error(
            "usage ledger write failed (%s: %s); %d rows waiting, retrying in %.1f s",
            type(cause).__name__, cause, self.pending, self._backoff_s,
        )
        # A fresh connection recreates a dropped table and sheds a broken file handle.
        self._close_connection()

    def _finish_close(self) -> None:
        for attempt in range(1, CLOSE_ATTEMPTS):
            if not self._held:
                break
            time.sleep(_BACKOFF_FIRST_S * attempt)
            self._write_held()
        if self._held:
            with self._lock:
                self._dropped += len(self._held)
                self._pending -= len(self._held)
            logger.error("usage ledger closed with %d rows it could not write; they are lost", len(self._held))
            self._held.clear()
        self._close_connection()

    def _close_connection(self) -> None:
        if self._connected:
            self._connected = False
            try:
                self.store.close()
            except Exception:  # closing a broken connection may fail too; it is dropped either way
                pass
