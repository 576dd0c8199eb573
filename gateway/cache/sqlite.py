"""The persistent backend: one SQLite file in WAL mode, every query in one worker thread.

The connection belongs to a single-thread executor, so SQLite sees one thread and the event
loop never waits on disk. A read uses a short busy timeout: a database locked by another
process costs a request a miss, not a stall. Expired rows are deleted now and then while
writing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

__all__ = ["SQLiteBackend", "sqlite_path"]

T = TypeVar("T")

#: Keys per SELECT (SQLite's default limit on bound parameters is 32766; smaller is faster).
_CHUNK = 500
#: At most one sweep of expired rows this often.
_SWEEP_EVERY_S = 60.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embedding_cache "
    "(key BLOB PRIMARY KEY, value BLOB NOT NULL, expires REAL) WITHOUT ROWID"
)


def sqlite_path(url: str) -> str:
    """``sqlite:///PATH`` → ``PATH`` (``sqlite:////abs`` for an absolute path)."""
    if not url.startswith("sqlite:///"):
        raise ValueError("a SQLite cache is named sqlite:///PATH")
    return url[len("sqlite:///") :]


class SQLiteBackend:
    """Vectors in a SQLite file that outlives the process."""

    kind = "sqlite"
    in_process = False

    def __init__(
        self,
        path: str,
        *,
        ttl_s: float = 0.0,
        busy_timeout_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._swept = 0.0

    @property
    def size_bytes(self) -> int | None:
        return None

    @property
    def evictions(self) -> int:
        return 0

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self) -> None:
        await self._run(self._connection)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                with conn:
                    conn.execute(_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self._run(lambda: self._guarded(lambda: self._get(keys)))

    def _guarded(self, call: Callable[[], T]) -> T:
        """Runs ``call``; after a fault other than a lock, the next call opens a fresh
        connection (a replaced or broken file is not held on to)."""
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                self._drop_connection()
            raise
        except sqlite3.Error:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        conn = self._connection()
        now = self._clock()
        found: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, value FROM embedding_cache WHERE key IN ({marks}) "
                "AND (expires IS NULL OR expires > ?)",
                (*chunk, now),
            ).fetchall()
            found.update((bytes(k), bytes(v)) for k, v in rows)
        return [found.get(key) for key in keys]

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if items:
            await self._run(lambda: self._guarded(lambda: self._put(items)))

    def _put(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        conn = self._connection()
        now = self._clock()
        expires = now + self.ttl_s if self.ttl_s else None
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO embedding_cache (key, value, expires) VALUES (?, ?, ?)",
                [(key, value, expires) for key, value in items],
            )
            if self.ttl_s and now - self._swept >= _SWEEP_EVERY_S:
                self._swept = now
                conn.execute("DELETE FROM embedding_cache WHERE expires <= ?", (now,))

    async def aclose(self) -> None:
        await self._run(self._drop_connection)
        self._executor.shutdown(wait=True)
