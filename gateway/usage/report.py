"""Reading the usage ledger: sums per group over a time window, for the API and the CLI.

``GET /v1/usage`` and ``embedding-gateway usage`` share these, so both accept the same
times and give the same sums, from SQLite (a read-only connection, which WAL lets run
beside the writer) or PostgreSQL (:mod:`gateway.usage.postgres`); one query builder serves
both.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from gateway.errors import InvalidRequest

__all__ = [
    "GROUP_BY_CHOICES",
    "LedgerError",
    "build_usage_query",
    "format_usage_table",
    "ledger_path",
    "parse_since",
    "parse_time",
    "query_usage",
    "read_usage",
    "usage_rows",
]

URL_PREFIX = "sqlite:///"
GROUP_BY_CHOICES = ("key", "alias", "deployment", "user", "metadata.<name>")
_GROUP_COLUMNS = {"key": "key_id", "alias": "alias", "deployment": "deployment", "user": '"user"'}
_METADATA_PREFIX = "metadata."

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_COLUMNS = ("requests", "inputs", "prompt_tokens", "total_tokens", "cost", "cached_tokens", "cost_saved")


class LedgerError(Exception):
    """The ledger cannot be opened or read (bad path, not a ledger); the message says why."""


def ledger_path(url: str) -> Path:
    """The file behind ``sqlite:///PATH`` (``sqlite:////abs/path`` for an absolute one)."""
    if not url.startswith(URL_PREFIX) or len(url) == len(URL_PREFIX):
        raise LedgerError(f"usage ledger must be sqlite:///PATH, not {url!r}")
    return Path(url[len(URL_PREFIX):])


def _group_expression(group_by: str, dialect: str) -> tuple[str, list[str]]:
    column = _GROUP_COLUMNS.get(group_by)
    if column is not None:
        return column, []
    if group_by.startswith(_METADATA_PREFIX):
        name = group_by[len(_METADATA_PREFIX):]
        if name and len(name) <= 64 and '"' not in name and "\\" not in name and name.isprintable():
            if dialect == "postgresql":
                return "(metadata::jsonb ->> %s)", [name]
            return "json_extract(metadata, ?)", [f'$."{name}"']
    raise InvalidRequest(
        f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}, not {group_by!r}", param="group_by"
    )


def build_usage_query(
    group_by: str, start: float | None, end: float | None, *, dialect: str = "sqlite"
) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) summing the ``usage`` table per group over ``[start, end)``."""
    mark = "%s" if dialect == "postgresql" else "?"
    # PostgreSQL's ORDER BY may name an output column but not use it in an expression.
    order = "grp NULLS LAST" if dialect == "postgresql" else "grp IS NULL, grp"
    expression, params = _group_expression(group_by, dialect)
    where, bounds = [], []
    if start is not None:
        where.append(f"ts >= {mark}")
        bounds.append(start)
    if end is not None:
        where.append(f"ts < {mark}")
        bounds.append(end)
    sql = (
        f"SELECT {expression} AS grp, COUNT(*), COALESCE(SUM(inputs), 0), COALESCE(SUM(prompt_tokens), 0), "
        f"COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost), 0.0), COALESCE(SUM(cached_inputs), 0), "
        f"COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cost_saved), 0.0) FROM usage"
        f"{' WHERE ' + ' AND '.join(where) if where else ''} GROUP BY grp ORDER BY {order}"
    )
    return sql, [*params, *bounds]


def usage_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Result rows of :func:`build_usage_query` as the API's dicts."""
    return [
        {
            "group": group,
            "requests": int(requests),
            "inputs": int(inputs),
            "prompt_tokens": int(prompt_tokens),
            "total_tokens": int(total_tokens),
            "cost": round(float(cost), 12),
            "cached_inputs": int(cached_inputs),
            "cached_tokens": int(cached_tokens),
            "cost_saved": round(float(saved), 12),
        }
        for group, requests, inputs, prompt_tokens, total_tokens, cost, cached_inputs, cached_tokens, saved in rows
    ]


def query_usage(
    path: str | Path, *, start: float | None = None, end: float | None = None, group_by: str = "alias"
) -> list[dict[str, Any]]:
    """Sums the SQLite ledger at ``path`` per group over ``[start, end)``; blocking, for a thread or the CLI."""
    sql, params = build_usage_query(group_by, start, end)
    path = Path(path)
    if not path.is_file():
        raise LedgerError(f"no usage ledger at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the usage ledger at {path}: {exc}") from exc
    return usage_rows(rows)


def parse_time(text: str, *, param: str) -> float:
    """Epoch seconds from ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00Z``); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"{param} must be an ISO 8601 time such as 2024-05-01T12:00:00Z, not {text!r}", param=param
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_since(text: str) -> float:
    """Seconds in a duration like ``90s``, ``30m``, ``24h``, ``7d`` or ``2w``; raises ``ValueError``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"duration must look like 90s, 30m, 24h, 7d or 2w, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def read_usage(
    ledger: str | Path, *, start: float | None = None, end: float | None = None, group_by: str = "alias"
) -> list[dict[str, Any]]:
    """Usage per group from a ledger URL (``sqlite:///PATH``, ``postgresql://...``) or file
    path; blocking, for the CLI.

    Raises :class:`LedgerError` (no ledger there) or ``InvalidRequest`` (bad group_by).
    """
    if isinstance(ledger, str) and ledger.startswith(("postgresql://", "postgres://")):
        from gateway.usage.postgres import query_postgres

        return query_postgres(ledger, start=start, end=end, group_by=group_by)
    path = ledger_path(ledger) if isinstance(ledger, str) and ledger.startswith(URL_PREFIX) else Path(ledger)
    return query_usage(path, start=start, end=end, group_by=group_by)


def format_usage_table(rows: Sequence[dict[str, Any]], group_by: str) -> str:
    """A plain-text table, one line per group plus a total line, numbers right-aligned."""
    header = (group_by, *_COLUMNS)
    body = [[_group_label(row["group"]), *(_cell(name, row[name]) for name in _COLUMNS)] for row in rows]
    totals = {name: sum(row[name] for row in rows) for name in _COLUMNS}
    lines = [list(header), *body, ["total", *(_cell(name, totals[name]) for name in _COLUMNS)]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join((first, *rest)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:-1]), rule, render(lines[-1])])


def _group_label(group: Any) -> str:
    return "(none)" if group is None else str(group)


def _cell(name: str, value: Any) -> str:
    if name in ("cost", "cost_saved"):
        return f"{float(value):.6f}"
    return str(int(value))
