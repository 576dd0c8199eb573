"""Prometheus metrics for one app, in its own registry (several apps may share a process).

Label values come from the config only (aliases, deployment names) or from small fixed
sets (status codes, attempt outcomes): an alias a client made up is counted as
``other``, so no request can create new series.

The per-request series are plain numbers in dicts keyed by label tuple, turned into
metric families when Prometheus scrapes (prometheus_client's custom-collector pattern).
prometheus_client's own Counter and Histogram take a lock and walk their buckets in
Python on every update, which cost the gateway about 40,000 CPU instructions per
request; here an update is a dict lookup and an addition. Every update and every scrape
runs on the event loop, so nothing needs a lock. Values that live elsewhere (local queue
depths, the ledger's counters) are read at scrape time through functions the app
registers.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from gateway.cache import EmbeddingCache

__all__ = ["CIRCUIT_STATES", "HealthStats", "LedgerStats", "Metrics", "NO_LABEL", "OTHER_ALIAS", "StateStats"]

#: The value of ``gateway_circuit_state`` for each breaker state.
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
#: The label value when there is none (a request refused before it reached a deployment).
NO_LABEL = "none"
#: The alias label of requests for an alias the config does not define.
OTHER_ALIAS = "other"
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[str, ...]


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


class StateStats(Protocol):
    """What the metrics read from the shared-state client at scrape time."""

    @property
    def up(self) -> bool: ...

    @property
    def errors(self) -> dict[str, int]: ...

    @property
    def unchecked(self) -> int: ...


class HealthStats(Protocol):
    """A deployment as its health probe left it."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> str: ...


class _Series:
    """One metric family: its values per label tuple; a series exists once it was updated."""

    def __init__(self, name: str, documentation: str, labels: Iterable[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.values: dict[Labels, float] = {}

    def add(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def counter(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family

    def gauge(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class _Histogram:
    """Observation counts per bucket (upper bounds inclusive, as Prometheus's ``le``) and sums."""

    def __init__(self, name: str, documentation: str, labels: Iterable[str], bounds: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.bounds = tuple(float(b) for b in bounds)
        self._edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        #: Per label tuple: a count per bucket (the last one past every bound), then the sum.
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, counts in list(self.series.items()):
            buckets, running = [], 0.0
            for edge, count in zip(self._edges, counts):
                running += count
                buckets.append((edge, running))
            family.add_metric(list(labels), buckets, sum_value=counts[-1])
        return family


class _PerRequestCollector(Collector):
    """Exposes the per-request families of one :class:`Metrics` at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        yield m.requests.counter()
        yield m.tokens.counter()
        yield m.cost.counter()
        yield m.request_seconds.family()
        yield m.attempt_seconds.family()
        yield m.retries.counter()
        yield m.fallbacks.counter()
        yield m.circuit.gauge()
        yield m.batch_size.family()
        yield m.refused.counter()
        yield m.connections_cut.counter()


class _ScrapeTimeCollector(Collector):
    """Queue depths and ledger counters, read from their owners when Prometheus scrapes."""

    def __init__(self) -> None:
        self.queue_depths: dict[str, Callable[[], int]] = {}
        self.ledger: LedgerStats | None = None
        self.state: StateStats | None = None
        self.probed: list[HealthStats] = []

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
        yield from self._state_families(self.state if with_samples else None)
        up = GaugeMetricFamily(
            "gateway_deployment_up", "Health probe verdict: 1 up, 0 down (probed deployments only).",
            labels=["deployment"],
        )
        probed: list[HealthStats] = self.probed if with_samples else []
        for probe in probed:
            if probe.health != "unknown":
                up.add_metric([probe.name], 1 if probe.health == "up" else 0)
        yield up

    @staticmethod
    def _state_families(state: StateStats | None) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "gateway_state_up", "Shared state server (state: redis://...) answering: 1 yes, 0 no.",
            value=(1 if state.up else 0) if state else 0,
        )
        errors = CounterMetricFamily(
            "gateway_state_errors", "Shared-state commands that failed or were skipped while it was down.",
            labels=["op"],
        )
        for op, count in sorted((state.errors if state else {}).items()):
            errors.add_metric([op], count)
        yield errors
        yield CounterMetricFamily(
            "gateway_ratelimit_unchecked",
            "Requests admitted without a rate-limit check because the state server was down (state_failure: open).",
            value=state.unchecked if state else 0,
        )


class Metrics:
    def __init__(self, *, aliases: Iterable[str] | None = None) -> None:
        """Metrics in a fresh registry; ``aliases`` (the config's) bound the ``alias`` label."""
        self.registry = CollectorRegistry()
        self._aliases = frozenset(aliases) if aliases is not None else None
        self.requests = _Series(
            "gateway_requests", "Requests answered, by alias, deployment and status.",
            ["alias", "deployment", "status"],
        )
        self.tokens = _Series("gateway_tokens", "Prompt tokens served.", ["alias", "deployment"])
        self.cost = _Series("gateway_cost_usd", "Cost of served requests, in US dollars.", ["alias", "deployment"])
        self.request_seconds = _Histogram(
            "gateway_request_seconds", "Whole-request latency.", ["alias"], REQUEST_BUCKETS
        )
        self.attempt_seconds = _Histogram(
            "gateway_upstream_attempt_seconds", "Latency of one call to one deployment.",
            ["deployment", "outcome"], REQUEST_BUCKETS,
        )
        self.retries = _Series("gateway_retries", "Attempts repeated on the same deployment.", ["alias"])
        self.fallbacks = _Series("gateway_fallbacks", "Moves to the next deployment after one failed.", ["alias"])
        self.circuit = _Series(
            "gateway_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["deployment"]
        )
        self.batch_size = _Histogram(
            "gateway_local_batch_size", "Inputs per batch run by a local model.", ["deployment"], BATCH_BUCKETS
        )
        self.refused = _Series(
            "gateway_refused_requests",
            "Requests refused before authentication (no route, method not allowed, no valid key), by status.",
            ["status"],
        )
        self.connections_cut = _Series(
            "gateway_connections_cut",
            "Connections the server closed on a client: max_connections, header_timeout, body_timeout, "
            "keepalive_timeout.",
            ["reason"],
        )
        self.registry.register(_PerRequestCollector(self))
        self._scrape_time = _ScrapeTimeCollector()
        self.registry.register(self._scrape_time)
        self._shared_render: Callable[[], bytes] | None = None

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
        self.requests.add((alias_label, deployment_label, str(status)))
        self.request_seconds.observe((alias_label,), seconds)
        if tokens:
            self.tokens.add((alias_label, deployment_label), tokens)
        if cost_usd:
            self.cost.add((alias_label, deployment_label), cost_usd)

    def observe_attempt(self, *, deployment: str, outcome: str, seconds: float) -> None:
        """One upstream call; ``outcome`` from a small fixed set, e.g. ``ok``, ``timeout``, ``error``."""
        self.attempt_seconds.observe((deployment, outcome), seconds)

    def count_retries(self, alias: str, count: int = 1) -> None:
        if count:
            self.retries.add((self._alias(alias),), count)

    def count_fallbacks(self, alias: str, count: int = 1) -> None:
        if count:
            self.fallbacks.add((self._alias(alias),), count)

    def set_circuit_state(self, deployment: str, state: str | int) -> None:
        """``state`` is ``closed``, ``half-open`` or ``open`` (or its number, 0 to 2)."""
        value = CIRCUIT_STATES.get(state) if isinstance(state, str) else state
        if value is None or value not in CIRCUIT_STATES.values():
            raise ValueError(f"circuit state must be one of {', '.join(CIRCUIT_STATES)}, not {state!r}")
        self.circuit.set((deployment,), value)

    def count_refused(self, status: int) -> None:
        """A request refused before authentication (it gets no usage row)."""
        self.refused.add((str(status),))

    def count_cut(self, reason: str) -> None:
        """A connection closed on its client; ``reason`` from the small fixed set documented."""
        self.connections_cut.add((reason,))

    def observe_local_batch(self, deployment: str, size: int) -> None:
        self.batch_size.observe((deployment,), size)

    def watch_queue_depth(self, deployment: str, depth: Callable[[], int]) -> None:
        """``depth()`` is called at each scrape for ``gateway_local_queue_depth{deployment}``."""
        self._scrape_time.queue_depths[deployment] = depth

    def watch_ledger(self, ledger: LedgerStats | None) -> None:
        """The ledger whose counters ``gateway_ledger_*`` report (zeros without one)."""
        self._scrape_time.ledger = ledger

    def watch_state(self, state: StateStats | None) -> None:
        """The shared-state client whose health ``gateway_state_*`` report."""
        self._scrape_time.state = state

    def watch_health(self, deployments: Iterable[HealthStats]) -> None:
        """Deployments with a health probe, for ``gateway_deployment_up``."""
        self._scrape_time.probed = list(deployments)

    def share(self, render: Callable[[], bytes]) -> None:
        """Several workers: ``render()`` gives the totals of all of them (see
        :mod:`gateway.usage.workers`); one worker keeps the direct path."""
        self._shared_render = render

    def watch_cache(self, cache: EmbeddingCache) -> None:
        """The embedding cache whose counters ``gateway_cache_*`` report."""
        from gateway.usage.cache_metrics import CacheCollector

        self.registry.register(CacheCollector(cache))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type, for ``GET /metrics``."""
        if self._shared_render is not None:
            return self._shared_render(), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _alias(self, alias: str | None) -> str:
        if alias is None:
            return NO_LABEL
        if self._aliases is not None and alias not in self._aliases:
            return OTHER_ALIAS
        return alias
