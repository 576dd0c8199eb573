"""Reading the ledger for people: time arguments and the CLI table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.usage.ledger import LedgerError, UsageLedger, UsageRecord
from gateway.usage.report import format_usage_table, parse_since, parse_time, read_usage


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_parse_time_reads_iso_8601_and_assumes_utc() -> None:
    assert parse_time("2024-05-01T12:00:00Z", param="start") == 1714564800.0
    assert parse_time("2024-05-01T14:00:00+02:00", param="start") == 1714564800.0
    assert parse_time("2024-05-01T12:00:00", param="start") == 1714564800.0
    assert parse_time("2024-05-01", param="end") == 1714521600.0


def test_parse_time_names_the_parameter() -> None:
    with pytest.raises(InvalidRequest, match="end must be an ISO 8601 time") as caught:
        parse_time("yesterday", param="end")
    assert caught.value.param == "end"


def test_parse_since() -> None:
    assert parse_since("90s") == 90
    assert parse_since("30m") == 1800
    assert parse_since("24h") == 86400
    assert parse_since("7d") == 7 * 86400
    assert parse_since("1.5h") == 5400
    with pytest.raises(ValueError, match="24h"):
        parse_since("24 hours")


def test_format_usage_table() -> None:
    rows: list[dict[str, Any]] = [
        {"group": "mini", "requests": 3, "inputs": 7, "prompt_tokens": 41, "total_tokens": 41, "cost": 0.0,
         "cached_tokens": 30, "cost_saved": 0.0},
        {"group": None, "requests": 12, "inputs": 1, "prompt_tokens": 5, "total_tokens": 5, "cost": 0.25,
         "cached_tokens": 0, "cost_saved": 0.5},
    ]
    assert format_usage_table(rows, "alias").splitlines() == [
        "alias   requests  inputs  prompt_tokens  total_tokens      cost  cached_tokens  cost_saved",
        "------  --------  ------  -------------  ------------  --------  -------------  ----------",
        "mini           3       7             41            41  0.000000             30    0.000000",
        "(none)        12       1              5             5  0.250000              0    0.500000",
        "------  --------  ------  -------------  ------------  --------  -------------  ----------",
        "total         15       8             46            46  0.250000             30    0.500000",
    ]


@pytest.mark.anyio
async def test_read_usage_takes_a_url_or_a_path(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    ledger = UsageLedger(f"sqlite:///{db}")
    await ledger.start()
    ledger.record(UsageRecord(
        ts=100.0, request_id="r", key_id="k", alias="mini", deployment="local", provider="onnx",
        upstream_model="m", inputs=1, prompt_tokens=4, total_tokens=4, cost=None, status=200,
        latency_ms=1.0, attempts=1,
    ))
    await ledger.aclose()
    expected = [{
        "group": "k", "requests": 1, "inputs": 1, "prompt_tokens": 4, "total_tokens": 4, "cost": 0.0,
        "cached_inputs": 0, "cached_tokens": 0, "cost_saved": 0.0,
    }]
    assert read_usage(f"sqlite:///{db}", group_by="key") == expected
    assert read_usage(db, start=50, end=150, group_by="key") == expected
    assert read_usage(str(db), start=101, group_by="key") == []
    with pytest.raises(LedgerError):
        read_usage(f"sqlite:///{tmp_path / 'nope.db'}")
