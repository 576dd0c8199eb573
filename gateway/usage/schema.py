"""The ``usage`` table, defined once for every ledger backend (SQLite, PostgreSQL).

The columns are :class:`UsageRecord`'s fields, in order, typed by their annotations: adding
a column is one line in the record (with a default, so existing callers keep working).
Both backends create the table when it is missing and add the columns an older table
lacks, at start, so an upgrade needs no manual migration.
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple, Union, get_args, get_origin, get_type_hints

import orjson

__all__ = ["UsageRecord", "columns", "quoted", "row_values"]


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
    #: The embedding cache's part: inputs and tokens no backend computed for the request,
    #: and what they would have cost.
    cached_inputs: int = 0
    cached_tokens: int = 0
    cost_saved: float | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


# Per Python type: the SQLite and the PostgreSQL column type. No NOT NULL constraints: one
# malformed row must never make its whole batch fail forever.
_TYPES: dict[type, tuple[str, str]] = {
    float: ("REAL", "DOUBLE PRECISION"),
    int: ("INTEGER", "BIGINT"),
    str: ("TEXT", "TEXT"),
    dict: ("TEXT", "TEXT"),  # JSON text in both, so one row encodes the same everywhere
}


def _base(hint: Any) -> type:
    """``float`` of ``float | None``, ``dict`` of ``dict[str, str] | None``."""
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    origin = get_origin(hint)
    base: type = origin if origin is not None else hint
    return base


def columns(dialect: str) -> list[tuple[str, str]]:
    """``(name, SQL type)`` of every column but ``id``, for ``sqlite`` or ``postgresql``."""
    index = 0 if dialect == "sqlite" else 1
    hints = get_type_hints(UsageRecord)
    return [(name, _TYPES[_base(hints[name])][index]) for name in UsageRecord._fields]


def quoted(name: str) -> str:
    """A column name as an SQL identifier (``user`` is a reserved word in PostgreSQL)."""
    return f'"{name}"'


def row_values(rec: UsageRecord) -> tuple[Any, ...]:
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
