"""Prometheus metrics for one app, in its own registry (several apps may share a process).

Label values come from the config only (aliases, deployment names) or from small fixed
sets (status codes, attempt outcomes): an alias a client made up is counted as
``other``, so no request can create new series. Labelled children are cached, so the hot
path is a dict lookup and an increment. Values that live elsewhere (local queue depths,
the ledger's counters) are read at scrape time through functions the app registers.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, Iterator, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CIRCUIT_STATES", "LedgerStats", "Metrics", "NO_LABEL", "OTHER_ALIAS"]

#: The value of ``gateway_circuit_state`` for each breaker state.
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
#: The label value when there is none (a request refused before it reached a deployment).
NO_LABEL = "none"
#: The alias label of requests for an alias the config does not define.
OTHER_ALIAS = "other"
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_M = TypeVar("_M", Counter, Gauge, Histogram)


class LedgerStats(Protocol):
    """What the metrics read from the usage ledger at scrape time."""

    @property
    def rows_written(self) -> int: ...

    @property
    def rows_dropped(self) -> int: ...

    @property
    def write_errors(self) -> int: ...

    @property
    def pending(self) -> int: ...


class _Children(Generic[_M]):
    """``metric.labels(...)`` cached per label tuple: the lookup is the costly part."""

    __slots__ = ("_metric", "_cache")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._cache: dict[tuple[str, ...], _M] = {}

    def get(self, *labels: str) -> _M:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*labels)
        return child


class _ScrapeTimeCollector(Collector):
    """Queue depths and ledger counters, read from their owners when Prometheus scrapes."""

    def __init__(self) -> None:
        self.queue_depths: dict[str, Callable[[], int]] = {}
        self.ledger: LedgerStats | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "gateway_local_queue_depth", "Inputs waiting in a local model's batch queue.", labels=["deployment"]
        )
        if with_samples:
            for deployment, read in list(self.queue_depths.items()):
                try:
                    depth.add_metric([deployment], read())
                except Exception:  # a scrape must not fail because one source did
                    continue
        yield depth
        ledger = self.ledger if with_samples else None
        yield CounterMetricFamily(
            "gateway_ledger_write_errors", "Failed usage-ledger write attempts.",
            value=ledger.write_errors if ledger else 0,
        )
        yield CounterMetricFamily(
            "gateway_ledger_rows_dropped", "Usage rows lost: queue full, or unwritable at shutdown.",
            value=ledger.rows_dropped if ledger else 0,
        )
        yield CounterMetricFamily(
            "gateway_ledger_rows_written", "Usage rows written to the ledger.",
            value=ledger.rows_written if ledger else 0,
        )
        yield GaugeMetricFamily(
            "gateway_ledger_pending_rows", "Usage rows recorded but not yet written.",
            value=ledger.pending if ledger else 0,
        )


class Metrics:
    def __init__(self, *, aliases: Iterable[str] | None = None) -> None:
        """Metrics in a fresh registry; ``aliases`` (the config's) bound the ``alias`` label."""
        self.registry = CollectorRegistry()
        self._aliases = frozenset(aliases) if aliases is not None else None
        registry = self.registry
        self._requests = _Children(Counter(
            "gateway_requests", "Requests answered, by alias, deployment and status.",
            ["alias", "deployment", "status"], registry=registry,
        ))
        self._tokens = _Children(Counter(
            "gateway_tokens", "Prompt tokens served.", ["alias", "deployment"], registry=registry,
        ))
        self._cost = _Children(Counter(
            "gateway_cost_usd", "Cost of served requests, in US dollars.", ["alias", "deployment"],
            registry=registry,
        ))
        self._request_seconds = _Children(Histogram(
            "gateway_request_seconds", "Whole-request latency.", ["alias"],
            buckets=REQUEST_BUCKETS, registry=registry,
        ))
        self._attempt_seconds = _Children(Histogram(
            "gateway_upstream_attempt_seconds", "Latency of one call to one deployment.",
            ["deployment", "outcome"], buckets=REQUEST_BUCKETS, registry=registry,
        ))
        self._retries = _Children(Counter(
            "gateway_retries", "Attempts repeated on the same deployment.", ["alias"], registry=registry,
        ))
        self._fallbacks = _Children(Counter(
            "gateway_fallbacks", "Moves to the next deployment after one failed.", ["alias"], registry=registry,
        ))
        self._circuit = _Children(Gauge(
            "gateway_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["deployment"],
            registry=registry,
        ))
        self._batch_size = _Children(Histogram(
            "gateway_local_batch_size", "Inputs per batch run by a local model.", ["deployment"],
            buckets=BATCH_BUCKETS, registry=registry,
        ))
        self._scrape_time = _ScrapeTimeCollector()
        registry.register(self._scrape_time)

    def observe_request(
        self,
        *,
        alias: str | None,
        deployment: str | None,
        status: int,
        seconds: float,
        tokens: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        """One answered request (any status); tokens and cost only count when given."""
        alias_label = self._alias(alias)
        deployment_label = deployment or NO_LABEL
        self._requests.get(alias_label, deployment_label, str(status)).inc()
        self._request_seconds.get(alias_label).observe(seconds)
        if tokens:
            self._tokens.get(alias_label, deployment_label).inc(tokens)
        if cost_usd:
            self._cost.get(alias_label, deployment_label).inc(cost_usd)

    def observe_attempt(self, *, deployment: str, outcome: str, seconds: float) -> None:
        """One upstream call; ``outcome`` from a small fixed set, e.g. ``ok``, ``timeout``, ``error``."""
        self._attempt_seconds.get(deployment, outcome).observe(seconds)

    def count_retries(self, alias: str, count: int = 1) -> None:
        if count:
            self._retries.get(self._alias(alias)).inc(count)

    def count_fallbacks(self, alias: str, count: int = 1) -> None:
        if count:
            self._fallbacks.get(self._alias(alias)).inc(count)

    def set_circuit_state(self, deployment: str, state: str | int) -> None:
        """``state`` is ``closed``, ``half-open`` or ``open`` (or its number, 0 to 2)."""
        value = CIRCUIT_STATES.get(state) if isinstance(state, str) else state
        if value is None or value not in CIRCUIT_STATES.values():
            raise ValueError(f"circuit state must be one of {', '.join(CIRCUIT_STATES)}, not {state!r}")
        self._circuit.get(deployment).set(value)

    def observe_local_batch(self, deployment: str, size: int) -> None:
        self._batch_size.get(deployment).observe(size)

    def watch_queue_depth(self, deployment: str, depth: Callable[[], int]) -> None:
        """``depth()`` is called at each scrape for ``gateway_local_queue_depth{deployment}``."""
        self._scrape_time.queue_depths[deployment] = depth

    def watch_ledger(self, ledger: LedgerStats | None) -> None:
        """The ledger whose counters ``gateway_ledger_*`` report (zeros without one)."""
        self._scrape_time.ledger = ledger

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _alias(self, alias: str | None) -> str:
        if alias is None:
            return NO_LABEL
        if self._aliases is not None and alias not in self._aliases:
            return OTHER_ALIAS
        return alias
