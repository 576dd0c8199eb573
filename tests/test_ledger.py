"""The usage ledger: rows match records, shutdown loses nothing, failures never reach callers."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import pytest

from gateway.errors import InvalidRequest
from gateway.usage.ledger import LedgerError, UsageLedger, UsageRecord, ledger_path
from gateway.usage.report import query_usage


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_record(n: int = 0, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "ts": 1_700_000_000.0 + n,
        "request_id": f"req-{n}",
        "key_id": "app-1",
        "alias": "mini",
        "deployment": "local",
        "provider": "onnx",
        "upstream_model": "all-MiniLM-L6-v2",
        "inputs": 2,
        "prompt_tokens": 10,
        "total_tokens": 10,
        "cost": None,
        "status": 200,
        "latency_ms": 3.5,
        "attempts": 1,
        "user": None,
        "metadata": {},
    }
    fields.update(overrides)
    return UsageRecord(**fields)


def rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM usage ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture
async def ledger(db: Path) -> AsyncIterator[UsageLedger]:
    ledger = UsageLedger(f"sqlite:///{db}", busy_timeout_s=0)
    await ledger.start()
    try:
        yield ledger
    finally:
        await ledger.aclose()


def test_ledger_path_reads_sqlite_urls() -> None:
    assert ledger_path("sqlite:///gateway-usage.db") == Path("gateway-usage.db")
    assert ledger_path("sqlite:////var/lib/usage.db") == Path("/var/lib/usage.db")
    for bad in ("usage.db", "sqlite://usage.db", "sqlite:///", "postgres:///x"):
        with pytest.raises(LedgerError, match="sqlite:///PATH"):
            ledger_path(bad)


@pytest.mark.anyio
async def test_rows_written_match_the_records(ledger: UsageLedger, db: Path) -> None:
    records = [
        make_record(0),
        make_record(1, key_id=None, deployment=None, provider=None, upstream_model=None, status=429,
                    prompt_tokens=0, total_tokens=0, attempts=0),
        make_record(2, cost=0.00012, user="alice", metadata={"team": "search", "env": "prod"}),
    ]
    for record in records:
        assert ledger.record(record)
    await ledger.flush()
    stored = rows(db)
    assert len(stored) == 3
    for row, record in zip(stored, records):
        for name in ("ts", "request_id", "key_id", "alias", "deployment", "provider", "upstream_model",
                     "inputs", "prompt_tokens", "total_tokens", "cost", "status", "latency_ms",
                     "attempts", "user"):
            assert row[name] == getattr(record, name), name
        assert (json.loads(row["metadata"]) if row["metadata"] else {}) == record.metadata
    assert (ledger.rows_written, ledger.rows_dropped, ledger.write_errors, ledger.pending) == (3, 0, 0, 0)


@pytest.mark.anyio
async def test_ledger_is_in_wal_mode_with_a_time_index(ledger: UsageLedger, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(usage)")}
    finally:
        conn.close()
    assert "usage_ts" in indexes  # the time window every usage report reads


@pytest.mark.anyio
async def test_64_concurrent_producers_lose_no_row(db: Path) -> None:
    ledger = UsageLedger(f"sqlite:///{db}", batch_rows=64)
    await ledger.start()

    async def produce(producer: int) -> None:
        for n in range(40):
            assert ledger.record(make_record(n, key_id=f"k{producer}", prompt_tokens=producer))
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        for producer in range(64):
            group.start_soon(produce, producer)
    await ledger.aclose()
    stored = rows(db)
    assert len(stored) == 64 * 40 == ledger.rows_written
    per_key: dict[str, int] = {}
    for row in stored:
        per_key[row["key_id"]] = per_key.get(row["key_id"], 0) + 1
        assert row["prompt_tokens"] == int(row["key_id"][1:])
    assert per_key == {f"k{p}": 40 for p in range(64)}
    assert ledger.rows_dropped == 0


@pytest.mark.anyio
async def test_record_is_safe_from_many_threads(ledger: UsageLedger, db: Path) -> None:
    def produce(producer: int) -> None:
        for n in range(50):
            ledger.record(make_record(n, key_id=f"t{producer}"))

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    await ledger.flush()
    assert len(rows(db)) == 64 * 50 == ledger.rows_written


@pytest.mark.anyio
async def test_aclose_writes_everything_still_queued(db: Path) -> None:
    # Batches that would only be written after a minute: aclose must not wait for them.
    ledger = UsageLedger(f"sqlite:///{db}", batch_rows=100_000, flush_interval_s=60)
    await ledger.start()
    for n in range(2500):
        ledger.record(make_record(n))
    await ledger.aclose()
    assert len(rows(db)) == 2500
    assert (ledger.rows_written, ledger.pending) == (2500, 0)
    assert not ledger.record(make_record(9999))
    assert ledger.rows_dropped == 1


@pytest.mark.anyio
async def test_rows_recorded_before_start_are_written(db: Path) -> None:
    ledger = UsageLedger(f"sqlite:///{db}")
    ledger.record(make_record(1))
    await ledger.start()
    await ledger.aclose()
    assert len(rows(db)) == 1


@pytest.mark.anyio
async def test_start_reports_an_unusable_path(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot open"):
        await UsageLedger(f"sqlite:///{tmp_path / 'missing-dir' / 'usage.db'}").start()
    with pytest.raises(LedgerError, match="cannot open"):
        await UsageLedger(f"sqlite:///{tmp_path}").start()


@pytest.mark.anyio
async def test_a_dropped_table_is_counted_logged_and_recovered(
    ledger: UsageLedger, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.record(make_record(0))
    await ledger.flush()
    other = sqlite3.connect(db)
    other.execute("DROP TABLE usage")
    other.close()
    caplog.set_level(logging.WARNING, logger="gateway.usage.ledger")
    for n in range(1, 6):
        assert ledger.record(make_record(n))
    await ledger.flush()
    assert ledger.write_errors == 1
    assert ledger.pending == 5
    failures = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is None and "\n" not in failures[0].getMessage()
    # The next attempt reconnects, recreates the table and writes the rows it kept.
    await ledger.flush()
    assert [row["request_id"] for row in rows(db)] == [f"req-{n}" for n in range(1, 6)]
    assert (ledger.rows_written, ledger.rows_dropped, ledger.pending) == (6, 0, 0)


@pytest.mark.anyio
async def test_a_locked_database_keeps_rows_until_it_is_free(ledger: UsageLedger, db: Path) -> None:
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(10):
            assert ledger.record(make_record(n))
        await ledger.flush()
        assert ledger.write_errors >= 1
        assert ledger.pending == 10
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await ledger.flush()
    assert len(rows(db)) == 10
    assert (ledger.rows_dropped, ledger.pending) == (0, 0)


@pytest.mark.anyio
async def test_rows_are_dropped_only_past_the_queue_bound(db: Path) -> None:
    ledger = UsageLedger(f"sqlite:///{db}", max_queue=5, busy_timeout_s=0)
    await ledger.start()
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        accepted = [ledger.record(make_record(n)) for n in range(8)]
        await ledger.flush()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert accepted == [True] * 5 + [False] * 3
    assert ledger.rows_dropped == 3
    await ledger.aclose()
    assert [row["request_id"] for row in rows(db)] == [f"req-{n}" for n in range(5)]


@pytest.mark.anyio
async def test_close_gives_up_on_an_unwritable_ledger_and_counts_the_loss(db: Path) -> None:
    ledger = UsageLedger(f"sqlite:///{db}", busy_timeout_s=0)
    await ledger.start()
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(4):
            ledger.record(make_record(n))
        await ledger.aclose()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert ledger.rows_dropped == 4
    assert ledger.write_errors >= 1
    assert ledger.pending == 0


async def _grouping_ledger(db: Path) -> UsageLedger:
    ledger = UsageLedger(f"sqlite:///{db}")
    await ledger.start()
    samples = [
        make_record(0, key_id="a", alias="mini", deployment="local", user="u1", prompt_tokens=5,
                    total_tokens=5, inputs=1, cost=0.5, metadata={"team": "search", "a.b": "dotted"}),
        make_record(10, key_id="a", alias="mini", deployment="tei", user="u2", prompt_tokens=7,
                    total_tokens=7, inputs=2, metadata={"team": "ads"}),
        make_record(20, key_id="b", alias="pplx", deployment="pplx", user="u1", prompt_tokens=11,
                    total_tokens=11, inputs=3, cost=0.25, metadata={"team": "search"}),
        make_record(30, key_id=None, alias="pplx", deployment="pplx", prompt_tokens=13,
                    total_tokens=13, inputs=4),
    ]
    for record in samples:
        ledger.record(record)
    return ledger


def _sums(result: list[dict[str, Any]]) -> dict[Any, tuple[int, int, int, float]]:
    return {r["group"]: (r["requests"], r["inputs"], r["prompt_tokens"], r["cost"]) for r in result}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("key", {"a": (2, 3, 12, 0.5), "b": (1, 3, 11, 0.25), None: (1, 4, 13, 0.0)}),
        ("alias", {"mini": (2, 3, 12, 0.5), "pplx": (2, 7, 24, 0.25)}),
        ("deployment", {"local": (1, 1, 5, 0.5), "tei": (1, 2, 7, 0.0), "pplx": (2, 7, 24, 0.25)}),
        ("user", {"u1": (2, 4, 16, 0.75), "u2": (1, 2, 7, 0.0), None: (1, 4, 13, 0.0)}),
        ("metadata.team", {"search": (2, 4, 16, 0.75), "ads": (1, 2, 7, 0.0), None: (1, 4, 13, 0.0)}),
        ("metadata.a.b", {"dotted": (1, 1, 5, 0.5), None: (3, 9, 31, 0.25)}),
    ],
)
async def test_query_groups_by_each_dimension(db: Path, group_by: str, expected: dict[Any, Any]) -> None:
    ledger = await _grouping_ledger(db)
    try:
        result = await ledger.query(None, None, group_by)
    finally:
        await ledger.aclose()
    assert _sums(result) == expected
    if None in expected:
        assert result[-1]["group"] is None
    for row in result:
        assert set(row) == {
            "group", "requests", "inputs", "prompt_tokens", "total_tokens", "cost",
            "cached_inputs", "cached_tokens", "cost_saved",
        }
        assert row["total_tokens"] == row["prompt_tokens"]


@pytest.mark.anyio
async def test_query_filters_by_time_window(db: Path) -> None:
    ledger = await _grouping_ledger(db)
    base = 1_700_000_000.0
    try:
        assert _sums(await ledger.query(base + 10, base + 30, "alias")) == {
            "mini": (1, 2, 7, 0.0), "pplx": (1, 3, 11, 0.25)
        }
        assert _sums(await ledger.query(base + 20, None, "alias")) == {"pplx": (2, 7, 24, 0.25)}
        assert _sums(await ledger.query(None, base + 10, "alias")) == {"mini": (1, 1, 5, 0.5)}
        assert await ledger.query(base + 100, None, "alias") == []
    finally:
        await ledger.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("group_by", ["model", "metadata.", 'metadata.a"b', "key; DROP TABLE usage"])
async def test_query_refuses_an_unknown_group_by(ledger: UsageLedger, group_by: str) -> None:
    with pytest.raises(InvalidRequest, match="group_by must be one of") as caught:
        await ledger.query(None, None, group_by)
    assert caught.value.param == "group_by"


@pytest.mark.anyio
async def test_the_cli_reads_a_closed_ledger(db: Path) -> None:
    ledger = await _grouping_ledger(db)
    await ledger.aclose()
    assert not Path(f"{db}-wal").exists()
    assert _sums(query_usage(db, group_by="alias")) == {"mini": (2, 3, 12, 0.5), "pplx": (2, 7, 24, 0.25)}
    with pytest.raises(LedgerError, match="no usage ledger"):
        query_usage(db.with_name("other.db"))
    assert not db.with_name("other.db").exists()
