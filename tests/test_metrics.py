"""Metrics: per-app registries, and the values the text exposition shows after known events."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.usage.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


class FakeLedger:
    def __init__(self) -> None:
        self.rows_written = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self.pending = 0


def run_known_sequence(metrics: Metrics) -> None:
    metrics.observe_request(alias="mini", deployment="local", status=200, seconds=0.02, tokens=12, cost_usd=None)
    metrics.observe_request(alias="mini", deployment="local", status=200, seconds=0.3, tokens=30)
    metrics.observe_request(alias="pplx", deployment="pplx-a", status=200, seconds=1.5, tokens=1000,
                            cost_usd=0.004)
    metrics.observe_request(alias="pplx", deployment="pplx-b", status=200, seconds=0.7, tokens=500,
                            cost_usd=0.002)
    metrics.observe_request(alias="pplx", deployment=None, status=503, seconds=2.0)
    metrics.observe_request(alias="made-up-by-a-client", deployment=None, status=404, seconds=0.001)
    metrics.observe_request(alias=None, deployment=None, status=401, seconds=0.001)
    metrics.observe_attempt(deployment="pplx-a", outcome="timeout", seconds=1.0)
    metrics.observe_attempt(deployment="pplx-a", outcome="ok", seconds=0.5)
    metrics.observe_attempt(deployment="pplx-b", outcome="ok", seconds=0.6)
    metrics.count_retries("pplx")
    metrics.count_fallbacks("pplx", 2)
    metrics.count_retries("mini", 0)
    metrics.set_circuit_state("pplx-a", "open")
    metrics.set_circuit_state("pplx-b", 1)
    metrics.set_circuit_state("pplx-b", "closed")
    for size in (1, 3, 32, 32):
        metrics.observe_local_batch("local", size)


def test_values_after_a_known_sequence() -> None:
    metrics = Metrics(aliases=["mini", "pplx"])
    depth = {"local": 7}
    metrics.watch_queue_depth("local", lambda: depth["local"])
    ledger = FakeLedger()
    metrics.watch_ledger(ledger)
    run_known_sequence(metrics)
    ledger.write_errors, ledger.rows_dropped, ledger.rows_written, ledger.pending = 3, 2, 40, 5
    got = samples(metrics)

    def at(name: str, **labels: str) -> Any:
        return got.get((name, frozenset(labels.items())))

    assert at("gateway_requests_total", alias="mini", deployment="local", status="200") == 2
    assert at("gateway_requests_total", alias="pplx", deployment="pplx-a", status="200") == 1
    assert at("gateway_requests_total", alias="pplx", deployment="none", status="503") == 1
    assert at("gateway_requests_total", alias="other", deployment="none", status="404") == 1
    assert at("gateway_requests_total", alias="none", deployment="none", status="401") == 1
    assert not any("made-up-by-a-client" in str(labels) for _, labels in got)
    assert at("gateway_tokens_total", alias="mini", deployment="local") == 42
    assert at("gateway_tokens_total", alias="pplx", deployment="pplx-a") == 1000
    assert at("gateway_tokens_total", alias="pplx", deployment="none") is None
    assert at("gateway_cost_usd_total", alias="pplx", deployment="pplx-a") == pytest.approx(0.004)
    assert at("gateway_cost_usd_total", alias="pplx", deployment="pplx-b") == pytest.approx(0.002)
    assert at("gateway_cost_usd_total", alias="mini", deployment="local") is None
    assert at("gateway_request_seconds_count", alias="pplx") == 3
    assert at("gateway_request_seconds_sum", alias="pplx") == pytest.approx(4.2)
    assert at("gateway_request_seconds_bucket", alias="mini", le="0.025") == 1
    assert at("gateway_request_seconds_bucket", alias="mini", le="0.5") == 2
    assert at("gateway_request_seconds_bucket", alias="pplx", le="1.0") == 1
    assert at("gateway_request_seconds_bucket", alias="pplx", le="+Inf") == 3
    assert at("gateway_upstream_attempt_seconds_count", deployment="pplx-a", outcome="timeout") == 1
    assert at("gateway_upstream_attempt_seconds_count", deployment="pplx-a", outcome="ok") == 1
    assert at("gateway_upstream_attempt_seconds_sum", deployment="pplx-b", outcome="ok") == pytest.approx(0.6)
    assert at("gateway_retries_total", alias="pplx") == 1
    assert at("gateway_retries_total", alias="mini") is None
    assert at("gateway_fallbacks_total", alias="pplx") == 2
    assert at("gateway_circuit_state", deployment="pplx-a") == 2
    assert at("gateway_circuit_state", deployment="pplx-b") == 0
    assert at("gateway_local_batch_size_count", deployment="local") == 4
    assert at("gateway_local_batch_size_sum", deployment="local") == 68
    assert at("gateway_local_batch_size_bucket", deployment="local", le="2.0") == 1
    assert at("gateway_local_batch_size_bucket", deployment="local", le="4.0") == 2
    assert at("gateway_local_queue_depth", deployment="local") == 7
    assert at("gateway_ledger_write_errors_total") == 3
    assert at("gateway_ledger_rows_dropped_total") == 2
    assert at("gateway_ledger_rows_written_total") == 40
    assert at("gateway_ledger_pending_rows") == 5
    # Scrape-time values are read again at each scrape.
    depth["local"] = 0
    assert value(metrics, "gateway_local_queue_depth", deployment="local") == 0


def test_apps_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request(alias="mini", deployment="local", status=200, seconds=0.1, tokens=3)
    assert value(first, "gateway_requests_total", alias="mini", deployment="local", status="200") == 1
    assert value(second, "gateway_requests_total", alias="mini", deployment="local", status="200") is None


def test_without_an_alias_list_every_alias_is_a_label() -> None:
    metrics = Metrics()
    metrics.observe_request(alias="anything", deployment="d", status=200, seconds=0.1)
    assert value(metrics, "gateway_requests_total", alias="anything", deployment="d", status="200") == 1


def test_ledger_counters_are_zero_without_a_ledger() -> None:
    metrics = Metrics()
    assert value(metrics, "gateway_ledger_write_errors_total") == 0
    assert value(metrics, "gateway_ledger_rows_dropped_total") == 0
    metrics.watch_ledger(FakeLedger())
    metrics.watch_ledger(None)
    assert value(metrics, "gateway_ledger_write_errors_total") == 0


def test_a_failing_queue_depth_source_does_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> int:
        raise RuntimeError("gone")

    metrics.watch_queue_depth("a", broken)
    metrics.watch_queue_depth("b", lambda: 2)
    assert value(metrics, "gateway_local_queue_depth", deployment="b") == 2
    assert value(metrics, "gateway_local_queue_depth", deployment="a") is None


def test_circuit_state_must_be_known() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="closed, half-open, open"):
        metrics.set_circuit_state("d", "ajar")
    with pytest.raises(ValueError):
        metrics.set_circuit_state("d", 5)
