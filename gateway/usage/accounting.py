"""After each billed request: one usage row and the request metrics, from its record.

The pipeline fills the request's :class:`~gateway.record.RequestRecord` as it learns
(alias, key id, user, metadata, the ``Served`` answer or the trace of what was tried); the
front door calls :meth:`Accounting.complete` once the response has gone out, whatever its
status.
"""

from __future__ import annotations

import logging
import time

from gateway.usage.ledger import UsageLedger, UsageRecord
from gateway.usage.metrics import Metrics
from gateway.record import RequestRecord

__all__ = ["Accounting"]

logger = logging.getLogger("gateway.usage.accounting")


class Accounting:
    def __init__(self, *, ledger: UsageLedger | None, metrics: Metrics | None) -> None:
        self.ledger = ledger
        self.metrics = metrics

    def complete(self, record: RequestRecord, status: int, latency_ms: float) -> None:
        if not (record.billed and record.authenticated):
            # No route, a method not allowed, no valid key: counted, never a usage row (a
            # client without a key must not be able to fill the ledger).
            if status >= 400 and self.metrics is not None:
                self.metrics.count_refused(status)
            return
        served = record.served
        alias = record.alias or "-"
        tokens, cost = 0, None
        cached_inputs = cached_tokens = 0
        cost_saved: float | None = None
        upstream_model: str | None = None
        if served is not None:
            deployment: str | None = served.deployment
            provider: str | None = served.provider
            attempts, inputs, upstream_model = served.attempts, served.inputs, served.upstream_model
            tokens, cost = served.prompt_tokens, served.cost_usd
            cached_inputs, cached_tokens, cost_saved = served.cached_inputs, served.cached_tokens, served.cost_saved
        else:
            trace = record.trace
            if trace is not None and trace.attempts:
                deployment = ",".join(trace.deployments)
                provider = ",".join(dict.fromkeys(trace.providers))
                attempts = trace.attempts
            else:
                deployment, provider, attempts = None, None, 0
            inputs = record.inputs
        if self.metrics is not None:
            self.metrics.observe_request(
                alias=alias, deployment=deployment or "none", status=status,
                seconds=latency_ms / 1000.0, tokens=tokens, cost_usd=cost,
            )
        if self.ledger is None:
            return
        row = UsageRecord(
            ts=time.time(),
            request_id=record.request_id,
            key_id=record.key_id,
            alias=alias,
            deployment=deployment,
            provider=provider or None,
            upstream_model=upstream_model,
            inputs=inputs,
            prompt_tokens=tokens,
            total_tokens=tokens,
            cost=cost,
            status=status,
            latency_ms=latency_ms,
            attempts=attempts,
            cached_inputs=cached_inputs,
            cached_tokens=cached_tokens,
            cost_saved=cost_saved,
            user=record.user,
            metadata=record.metadata or None,
        )
        if not self.ledger.record(row):
            logger.warning("usage row for request %s was dropped (ledger queue full or closed)", record.request_id)
