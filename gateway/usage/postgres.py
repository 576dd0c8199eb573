"""The PostgreSQL ledger store (psycopg 3): one table shared by every worker and replica.

The writer thread holds one connection and inserts each batch with ``executemany`` (which
psycopg pipelines: one round trip per batch, not per row) in one transaction. The table is
created or migrated at start under an advisory lock, so workers starting together do not
race on ``CREATE TABLE``. A connect is bounded by ``connect_timeout_s`` and every statement
by ``statement_timeout``, so a sick server holds the writer thread (never the event loop)
for seconds, not forever. Reads (``/v1/usage``, the ``usage`` command) use their own
connection.
"""

from __future__ import annotations

from typing import Any, Sequence

import psycopg

from gateway.config import redact_url
from gateway.usage.report import LedgerError, build_usage_query, usage_rows
from gateway.usage.schema import UsageRecord, columns, quoted, row_values

__all__ = ["PostgresStore", "query_postgres"]

_INSERT = (
    f"INSERT INTO usage ({', '.join(quoted(n) for n in UsageRecord._fields)}) "
    f"VALUES ({', '.join(['%s'] * len(UsageRecord._fields))})"
)
# Any fixed number: the lock that serialises schema changes between gateways.
_MIGRATION_LOCK = 0x6761746577617900
_STATEMENT_TIMEOUT_MS = 10_000


def _connect(url: str, connect_timeout_s: int) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            url, connect_timeout=connect_timeout_s, options=f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}"
        )
    except psycopg.Error as exc:
        raise LedgerError(f"cannot connect to the usage ledger at {redact_url(url)}: {_reason(exc)}") from exc


def _reason(exc: psycopg.Error) -> str:
    # psycopg's messages can hold the connection string; keep the first line, which does not.
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PostgresStore:
    """Rows in the ``usage`` table of the database at ``url``."""

    required_at_start = False

    def __init__(self, url: str, *, connect_timeout_s: int = 3) -> None:
        self.url = url
        self.description = redact_url(url)
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        conn = _connect(self.url, self._connect_timeout_s)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                _migrate(conn)
        except psycopg.Error as exc:
            conn.close()
            raise LedgerError(f"cannot prepare the usage ledger at {self.description}: {_reason(exc)}") from exc
        self._conn = conn

    def write(self, rows: Sequence[UsageRecord]) -> None:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        with self._conn.transaction():
            with self._conn.cursor() as cursor:
                cursor.executemany(_INSERT, [row_values(r) for r in rows])

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def query(self, start: float | None, end: float | None, group_by: str) -> list[dict[str, Any]]:
        return query_postgres(self.url, start=start, end=end, group_by=group_by)


def _migrate(conn: psycopg.Connection[Any]) -> None:
    defined = columns("postgresql")
    body = ", ".join(f"{quoted(name)} {kind}" for name, kind in defined)
    conn.execute(f"CREATE TABLE IF NOT EXISTS usage (id BIGSERIAL PRIMARY KEY, {body})")
    conn.execute("CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)")
    for name, kind in defined:
        conn.execute(f"ALTER TABLE usage ADD COLUMN IF NOT EXISTS {quoted(name)} {kind}")


def query_postgres(
    url: str, *, start: float | None = None, end: float | None = None, group_by: str = "alias", connect_timeout_s: int = 3
) -> list[dict[str, Any]]:
    """Usage per group over ``[start, end)`` from the ledger at ``url``; blocking."""
    sql, params = build_usage_query(group_by, start, end, dialect="postgresql")
    conn = _connect(url, connect_timeout_s)
    try:
        with conn:
            rows = conn.execute(sql, params).fetchall()
    except psycopg.errors.UndefinedTable:
        raise LedgerError(f"no usage table in {redact_url(url)}") from None
    except psycopg.Error as exc:
        raise LedgerError(f"cannot read the usage ledger at {redact_url(url)}: {_reason(exc)}") from exc
    return usage_rows(rows)
