"""``/metrics`` with several workers: every worker's figures, added up.

One worker keeps the fast path of :mod:`gateway.usage.metrics` (plain numbers turned into
families at scrape time). With several, whichever worker the scrape reaches must answer
for all of them, so each worker writes a snapshot of its families (JSON, atomically
replaced) to a directory shared by the workers of one ``serve``: every ``interval_s``,
at shutdown, and, for the worker answering, at the scrape itself. The scrape reads every
snapshot and merges samples of the same name and labels:

- counters and histograms are summed over every snapshot, a dead worker's too (its
  requests happened; a total that went down would read as a counter reset);
- gauges come only from live workers and are summed (queue depths, rows pending), except
  where the sum means nothing: the worst circuit state (max) and whether every worker finds
  a deployment and the state server up (min).

So the scraper sees totals; another worker's part is at most ``interval_s`` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["WorkerMetrics", "DEFAULT_PUBLISH_INTERVAL_S", "METRICS_DIR_ENV"]

logger = logging.getLogger("gateway.usage.workers")

#: The variable through which ``serve --workers`` tells each worker where snapshots go.
METRICS_DIR_ENV = "GATEWAY_METRICS_DIR"
DEFAULT_PUBLISH_INTERVAL_S = 1.0
_GAUGE_MERGE = {"gateway_circuit_state": max, "gateway_deployment_up": min, "gateway_state_up": min}

Key = tuple[str, tuple[tuple[str, str], ...]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class WorkerMetrics:
    """This worker's snapshot writer and the merging scrape."""

    def __init__(self, registry: CollectorRegistry, directory: Path, *, interval_s: float = DEFAULT_PUBLISH_INTERVAL_S) -> None:
        self.registry = registry
        self.directory = directory
        self.interval_s = interval_s
        self.pid = os.getpid()
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> bytes:
        families = [
            {
                "name": family.name,
                "type": family.type,
                "doc": family.documentation,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
            for family in self.registry.collect()
        ]
        return orjson.dumps({"pid": self.pid, "families": families})

    def publish(self) -> None:
        path = self.directory / f"worker-{self.pid}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(self.snapshot())
        os.replace(temporary, path)

    def render(self) -> bytes:
        self.publish()
        snapshots = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                snapshots.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):  # a worker mid-replace: its old file is gone
                continue
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merge(snapshots, alive=_alive)))
        return generate_latest(registry)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.publish)
            except OSError as exc:
                logger.warning("cannot write this worker's metrics snapshot: %s", exc)

    def start(self) -> None:
        self.publish()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-snapshots")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self.publish()


def merge(snapshots: list[dict[str, Any]], *, alive: Any = _alive) -> list[Metric]:
    """The families of several workers' snapshots, merged as the module docstring says."""
    order: list[str] = []
    meta: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[Key, list[float]]] = {}
    for snapshot in snapshots:
        live = alive(int(snapshot["pid"]))
        for family in snapshot["families"]:
            name, kind = family["name"], family["type"]
            if name not in meta:
                order.append(name)
                meta[name] = (kind, family["doc"])
                values[name] = {}
            if kind == "gauge" and not live:
                continue
            series = values[name]
            for sample_name, labels, value in family["samples"]:
                series.setdefault((sample_name, tuple(sorted(labels.items()))), []).append(float(value))
    families = []
    for name in order:
        kind, doc = meta[name]
        combine = _GAUGE_MERGE.get(name, sum) if kind == "gauge" else sum
        metric = Metric(name, doc, kind)
        for (sample_name, labels), found in values[name].items():
            metric.add_sample(sample_name, dict(labels), combine(found))
        families.append(metric)
    return families
