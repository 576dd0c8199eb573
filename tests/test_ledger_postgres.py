"""The usage ledger on a real PostgreSQL: the same rows, reports and migrations as SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from gateway.cli import main
from gateway.usage.ledger import UsageLedger
from gateway.usage.report import read_usage
from gateway.usage.schema import UsageRecord, columns
from serving import LOCAL, serve, stop, write_config
from services import private_database
from test_ledger import make_record


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pg() -> Any:
    with private_database() as url:
        yield url


def _rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT * FROM usage ORDER BY id")
        names = [c.name for c in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


@pytest.mark.anyio
async def test_rows_written_match_the_records_and_reports_group_them(pg: str) -> None:
    ledger = UsageLedger(pg, batch_rows=7)
    await ledger.start()
    records = [
        make_record(i, alias="mini" if i % 3 else "pplx", user=f"u{i % 2}", metadata={"team": "a" if i < 10 else "b"},
                    cost=0.5 if i % 3 == 0 else None)
        for i in range(25)
    ]
    for record in records:
        assert ledger.record(record)
    by_alias = await ledger.query(group_by="alias")
    await ledger.aclose()
    rows = _rows(pg)
    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    first = rows[0]
    assert {k: first[k] for k in UsageRecord._fields if k != "metadata"} == {
        k: v for k, v in records[0]._asdict().items() if k != "metadata"
    }
    assert json.loads(first["metadata"]) == {"team": "a"}
    assert {r["group"]: r["requests"] for r in by_alias} == {"mini": 16, "pplx": 9}
    assert next(r for r in by_alias if r["group"] == "pplx")["cost"] == pytest.approx(4.5)
    assert {r["group"]: r["requests"] for r in read_usage(pg, group_by="metadata.team")} == {"a": 10, "b": 15}
    assert {r["group"]: r["requests"] for r in read_usage(pg, group_by="user")} == {"u0": 13, "u1": 12}
    window = read_usage(pg, start=records[5].ts, end=records[10].ts, group_by="key")
    assert window == [{"group": "app-1", "requests": 5, "inputs": 10, "prompt_tokens": 50, "total_tokens": 50, "cost": 1.0,
                       "cached_inputs": 0, "cached_tokens": 0, "cost_saved": 0.0}]


@pytest.mark.anyio
async def test_an_older_table_gets_the_missing_columns_at_start(pg: str) -> None:
    kept = [(name, kind) for name, kind in columns("postgresql") if name not in ("user", "metadata")]
    with psycopg.connect(pg) as conn:
        body = ", ".join(f'"{n}" {k}' for n, k in kept)
        conn.execute(f"CREATE TABLE usage (id BIGSERIAL PRIMARY KEY, {body})")  # type: ignore[arg-type]
    ledger = UsageLedger(pg)
    await ledger.start()
    ledger.record(make_record(1, user="alice", metadata={"k": "v"}))
    await ledger.aclose()
    assert _rows(pg)[0]["user"] == "alice"


@pytest.mark.anyio
async def test_an_unreachable_server_buffers_rows_up_to_the_bound_then_counts_drops() -> None:
    from serving import free_port

    ledger = UsageLedger(f"postgresql://nobody@127.0.0.1:{free_port()}/none", max_queue=5)
    await ledger.start()  # a server ledger starts anyway: requests must be served
    accepted = [ledger.record(make_record(i)) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert ledger.rows_dropped == 3
    with anyio.fail_after(60):
        await ledger.aclose()
    assert ledger.rows_written == 0 and ledger.rows_dropped == 8


def test_v1_usage_and_the_usage_command_read_postgresql(pg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "g.yaml", {
        "models": {"mini": LOCAL},
        "usage": {"ledger": pg},
        "auth": {"keys": [{"id": "app", "key": "sk-a"}], "admin_keys": ["sk-admin"]},
    })
    with serve(path) as (process, base):
        for _ in range(3):
            response = httpx.post(f"{base}/v1/embeddings", json={"model": "mini", "input": "x"},
                                  headers={"authorization": "Bearer sk-a"}, timeout=30)
            assert response.status_code == 200
        usage = httpx.get(f"{base}/v1/usage?group_by=key", headers={"authorization": "Bearer sk-admin"}).json()
        assert usage["data"][0]["group"] == "app" and usage["data"][0]["requests"] == 3
        stop(process)
    assert main(["usage", "--config", str(path), "--by", "alias"]) == 0
    assert "mini" in capsys.readouterr().out
