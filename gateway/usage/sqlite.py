"""The SQLite ledger store: a local file in WAL mode (readers never block the writer)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Sequence

from gateway.usage.report import LedgerError, ledger_path, query_usage
from gateway.usage.schema import UsageRecord, columns, quoted, row_values

__all__ = ["SqliteStore", "ledger_problem"]

_INSERT = (
    f"INSERT INTO usage ({', '.join(quoted(n) for n in UsageRecord._fields)}) "
    f"VALUES ({', '.join('?' * len(UsageRecord._fields))})"
)


class SqliteStore:
    """Rows in the file at ``path``; ``busy_timeout_s`` is how long a write waits for
    another process's lock (several workers on one host share the file)."""

    required_at_start = True

    def __init__(self, path: Path, *, busy_timeout_s: float) -> None:
        self.path = path
        self.description = f"sqlite:///{path}"
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the usage ledger at {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                _migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"cannot prepare the usage ledger at {self.path}: {exc}") from exc
        self._conn = conn

    def write(self, rows: Sequence[UsageRecord]) -> None:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        with self._conn:
            self._conn.executemany(_INSERT, map(row_values, rows))

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def query(self, start: float | None, end: float | None, group_by: str) -> list[dict[str, Any]]:
        return query_usage(self.path, start=start, end=end, group_by=group_by)


def _migrate(conn: sqlite3.Connection) -> None:
    """Creates the table, or adds the columns an older one lacks."""
    defined = columns("sqlite")
    body = ", ".join(f"{quoted(name)} {kind}" for name, kind in defined)
    conn.execute(f"CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY, {body})")
    # Usage reports read a time window and group it: one index, on time. Each further index
    # would be one more B-tree written for every request the gateway serves.
    conn.execute("CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)")
    present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    for name, kind in defined:
        if name not in present:
            conn.execute(f"ALTER TABLE usage ADD COLUMN {quoted(name)} {kind}")


def ledger_problem(url: str) -> str | None:
    """Why ``serve`` could not open the ledger at ``url``, found without creating the ledger
    (for ``check-config``: at most a temporary file, removed at once); ``None`` when it
    looks usable."""
    try:
        path = ledger_path(url)
    except LedgerError as exc:
        return str(exc)
    if path.exists():
        if path.is_dir():
            return f"{path} is a directory, not a ledger file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} cannot be written by this user"
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return f"{path} exists and is not an SQLite database"
    parent = path.parent
    if not parent.is_dir():
        return f"the folder {parent} does not exist"
    try:  # a real write: permission bits say nothing to root, and nothing of read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        return f"the folder {parent} cannot be written by this user (the ledger keeps journal files beside it)"
    return None
