"""The usage ledger: one SQLite row per request, written off the event loop.

``record()`` only puts the row on an in-memory queue. One writer thread takes rows off it
in batches (``batch_rows``, or whatever arrived within ``flush_interval_s``) and inserts
each batch in one transaction, in WAL mode. A failed write (disk full, database locked,
table gone) keeps its rows and is retried with backoff, reopening the database, so a sick
disk costs memory up to ``max_queue`` rows and never a request; past that bound new rows
are dropped and counted. ``aclose()`` writes everything still queued before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import orjson

from gateway.usage.report import LedgerError, ledger_path, query_usage

__all__ = ["LedgerError", "UsageLedger", "UsageRecord", "ledger_path"]

logger = logging.getLogger("gateway.usage.ledger")

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_ROWS = 500
DEFAULT_FLUSH_INTERVAL_S = 0.05
DEFAULT_BUSY_TIMEOUT_S = 1.0
#: Write attempts at shutdown before the rows still queued are given up.
CLOSE_ATTEMPTS = 3
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0

# No NOT NULL constraints: one malformed row must never make its whole batch fail forever.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS usage (
        id INTEGER PRIMARY KEY, ts REAL, request_id TEXT, key_id TEXT, alias TEXT,
        deployment TEXT, provider TEXT, upstream_model TEXT, inputs INTEGER,
        prompt_tokens INTEGER, total_tokens INTEGER, cost REAL, status INTEGER,
        latency_ms REAL, attempts INTEGER, user TEXT, metadata TEXT)""",
    # Usage reports read a time window and group it: one index, on time. Each further index
    # would be one more B-tree written for every request the gateway serves.
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
)


class UsageRecord(NamedTuple):
    """One answered (or refused) request, as the ledger stores it (fields in column order).

    A named tuple: one is built for every request, and a frozen dataclass of this many
    fields costs several times as much to build."""

    ts: float
    request_id: str
    key_id: str | None
    alias: str
    deployment: str | None
    provider: str | None
    upstream_model: str | None
    inputs: int
    prompt_tokens: int
    total_tokens: int
    cost: float | None
    status: int
    latency_ms: float
    attempts: int
    user: str | None = None
    metadata: dict[str, str] | None = None


_INSERT = (
    f"INSERT INTO usage ({', '.join(UsageRecord._fields)}) "
    f"VALUES ({', '.join('?' * len(UsageRecord._fields))})"
)


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
        """A ledger at ``url`` (``sqlite:///PATH``); nothing is opened before :meth:`start`.

        ``max_queue`` bounds the rows waiting in memory (queued or being retried);
        ``batch_rows`` and ``flush_interval_s`` decide when a batch is written;
        ``busy_timeout_s`` is how long one write waits for a lock held by another process.
        """
        self.path = ledger_path(url)
        self._max_queue = max_queue
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._busy_timeout_s = busy_timeout_s
        self._queue: queue.SimpleQueue[UsageRecord | _Marker] = queue.SimpleQueue()
        #: Set by a flush or close, so the writer does not sleep out its interval.
        self._urgent = threading.Event()
        self._held: list[UsageRecord] = []
        self._conn: sqlite3.Connection | None = None
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
        """Opens the database (WAL), creates the table, starts the writer; raises :class:`LedgerError`."""
        if self._thread is not None:
            return
        self._conn = await asyncio.to_thread(self._connect)
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
        return await asyncio.to_thread(query_usage, self.path, start=start, end=end, group_by=group_by)

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

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the usage ledger at {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"cannot prepare the usage ledger at {self.path}: {exc}") from exc
        return conn

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
            if self._conn is None:
                self._conn = self._connect()
            while self._held:
                chunk = self._held[: self._batch_rows]
                with self._conn:
                    self._conn.executemany(_INSERT, map(_row, chunk))
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
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None


def _row(rec: UsageRecord) -> tuple[Any, ...]:
    """The row's values in column order: the record itself, unless it has metadata to encode."""
    if rec.metadata is None:
        return rec
    if not rec.metadata:
        return (*rec[:-1], None)
    try:
        metadata = orjson.dumps(rec.metadata).decode()
    except TypeError:
        metadata = orjson.dumps({str(k): str(v) for k, v in rec.metadata.items()}).decode()
    return (*rec[:-1], metadata)
