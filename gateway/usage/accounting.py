"""After each API request: one usage row and the request metrics, from what the handler left.

Handlers put what they learn on ``request.state`` (alias, key id, user, metadata, the
``Served`` answer); the middleware calls :meth:`Accounting.complete` once the response
has gone out, whatever its status.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.usage.ledger import UsageLedger, UsageRecord
from gateway.usage.metrics import Metrics
from gateway.service import RequestTrace, Served

__all__ = ["ACCOUNTED_PATHS", "Accounting"]

logger = logging.getLogger("gateway.usage.accounting")

#: Routes whose requests are billed and counted.
ACCOUNTED_PATHS = frozenset({"/v1/embeddings", "/embeddings", "/v1/contextualizedembeddings"})


class Accounting:
    def __init__(self, *, ledger: UsageLedger | None, metrics: Metrics | None) -> None:
        self.ledger = ledger
        self.metrics = metrics

    def complete(self, path: str, state: dict[str, Any], status: int, latency_ms: float, request_id: str) -> None:
        if path not in ACCOUNTED_PATHS:
            return
        served: Served | None = state.get("served")
        alias = state.get("alias") or "-"
        tokens, cost = 0, None
        upstream_model: str | None = None
        if served is not None:
            deployment: str | None = served.deployment
            provider: str | None = served.provider
            attempts, inputs, upstream_model = served.attempts, served.inputs, served.upstream_model
            tokens, cost = served.prompt_tokens, served.cost_usd
        else:
            trace: RequestTrace | None = state.get("trace")
            if trace is not None and trace.attempts:
                deployment = ",".join(trace.deployments)
                provider = ",".join(dict.fromkeys(trace.providers))
                attempts = trace.attempts
            else:
                deployment, provider, attempts = None, None, 0
            inputs = int(state.get("inputs", 0))
        if self.metrics is not None:
            self.metrics.observe_request(
                alias=alias, deployment=deployment or "none", status=status,
                seconds=latency_ms / 1000.0, tokens=tokens, cost_usd=cost,
            )
        if self.ledger is None:
            return
        record = UsageRecord(
            ts=time.time(),
            request_id=request_id,
            key_id=state.get("key_id"),
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
            user=state.get("user"),
            metadata=state.get("metadata") or None,
        )
        if not self.ledger.record(record):
            logger.warning("usage row for request %s was dropped (ledger queue full or closed)", request_id)
