"""The embedding cache's counters as Prometheus families, read from the cache at scrape time."""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.cache import EmbeddingCache

__all__ = ["CacheCollector"]


class CacheCollector(Collector):
    """``gateway_cache_*``: hits, misses, coalesced inputs, bytes, evictions, faults."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        cache = self.cache
        counters = cache.counters
        backend = [cache.kind]

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, text, labels=["backend"])
            if with_samples:
                family.add_metric(backend, value)
            return family

        yield counter("gateway_cache_hits", "Inputs whose vector was read from the cache.", counters.hits)
        yield counter("gateway_cache_misses", "Inputs looked up and not found (or not read: no-cache).", counters.misses)
        yield counter(
            "gateway_cache_coalesced", "Inputs awaited from another request's flight instead of embedded again.",
            counters.coalesced,
        )
        yield counter("gateway_cache_stored", "Vectors written to the cache.", counters.stored)
        yield counter("gateway_cache_written_bytes", "Bytes of vectors written to the cache.", counters.stored_bytes)
        yield counter("gateway_cache_read_bytes", "Bytes of vectors served from the cache.", counters.read_bytes)
        yield counter("gateway_cache_evictions", "Vectors evicted to stay within max_bytes.", cache.backend.evictions)
        errors = CounterMetricFamily(
            "gateway_cache_errors", "Cache operations that failed (served without the cache).",
            labels=["backend", "operation"],
        )
        if with_samples:
            for operation, count in sorted(counters.errors.items()):
                errors.add_metric([cache.kind, operation], count)
        yield errors
        size = GaugeMetricFamily("gateway_cache_bytes", "Bytes the cache holds (memory backend).", labels=["backend"])
        if with_samples and cache.backend.size_bytes is not None:
            size.add_metric(backend, cache.backend.size_bytes)
        yield size
        flights = GaugeMetricFamily("gateway_cache_in_flight", "Inputs being embedded that others may await.")
        if with_samples:
            flights.add_metric([], len(cache.flights))
        yield flights
        waiting = GaugeMetricFamily("gateway_cache_waiting", "Inputs awaiting another request's flight.")
        if with_samples:
            waiting.add_metric([], cache.waiting)
        yield waiting
