"""The composition root: builds the gateway's objects from a config and wires them into
one ASGI app (the front door, its route table and its lifespan)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, AsyncIterator

from gateway.auth import Authenticator
from gateway.cache.build import build_cache
from gateway.caching import Caching
from gateway.config import GatewayConfig
from gateway.http.api import ApiHandlers
from gateway.http.body import JsonParser
from gateway.http import connections
from gateway.http.dispatch import FrontDoor
from gateway.http.ops import OpsHandlers
from gateway.http.routes import Route, RouteTable
from gateway.ratelimit import Limiter, RateLimiter
from gateway.routing.health import HealthProbes
from gateway.routing.router import Router
from gateway.runtime import Runtime, build_runtime
from gateway.service import EmbeddingService
from gateway.state.circuits import SharedCircuits
from gateway.state.client import SharedState
from gateway.state.ratelimit import SharedRateLimiter
from gateway.usage.accounting import Accounting
from gateway.usage.ledger import UsageLedger
from gateway.usage.metrics import Metrics
from gateway.usage.workers import WorkerMetrics
from providers.local.microbatch import MicroBatcher

__all__ = ["GatewayApp", "SharedParts", "create_app", "server_options"]

logger = logging.getLogger("gateway")

#: The ASGI app :func:`create_app` returns; ``lifespan_context()`` runs its lifespan by hand.
GatewayApp = FrontDoor


def _watch_local_models(runtime: Runtime, metrics: Metrics) -> None:
    for deployment in runtime.deployments:
        batcher = getattr(deployment.provider, "batcher", None)
        if isinstance(batcher, MicroBatcher):
            _watch_batcher(deployment.name, batcher, metrics)


def _watch_batcher(name: str, batcher: MicroBatcher, metrics: Metrics) -> None:
    def observe(size: int) -> None:
        metrics.observe_local_batch(name, size)

    metrics.watch_queue_depth(name, lambda: batcher.queue_depth)
    batcher.on_batch = observe


def server_options(config: GatewayConfig) -> dict[str, Any]:
    """What uvicorn needs besides the app, for ``uvicorn.Config(app, **options)``: the HTTP
    protocol that holds connections to ``server``'s limits (:mod:`gateway.http.connections`;
    :func:`create_app` sets their values in each process) and uvicorn's own idle keep-alive
    timeout. Raises this process's open-file limit to what ``max_connections`` needs (each
    worker process holds its own connections)."""
    connections.raise_fd_limit(config.server.max_connections)
    return {"http": connections.GuardedProtocol, "timeout_keep_alive": config.server.keepalive_timeout_s}


def create_app(
    config: GatewayConfig,
    *,
    runtime: Runtime | None = None,
    log_format: str = "text",
    metrics_dir: Path | None = None,
) -> GatewayApp:
    """An ASGI app serving ``config``; its lifespan loads the models and opens the ledger.

    ``metrics_dir`` is given to each of several workers (:mod:`gateway.usage.workers`)."""
    runtime = runtime or build_runtime(config)
    metrics = Metrics(aliases=config.models) if config.server.metrics else None
    server = config.server
    connections.configure(
        connections.ConnectionLimits(
            max_connections=server.max_connections,
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
        ),
        metrics.count_cut if metrics is not None else None,
    )
    ledger = UsageLedger(config.usage.ledger) if config.usage.enabled else None
    shared = SharedParts.build(config)
    probes = HealthProbes(runtime)
    workers = WorkerMetrics(metrics.registry, metrics_dir) if metrics is not None and metrics_dir else None
    if metrics is not None:
        metrics.watch_ledger(ledger)
        metrics.watch_state(shared.state)
        metrics.watch_health(probes.deployments)
        if workers is not None:
            metrics.share(workers.render)
    auth = Authenticator(config.auth)
    circuits = shared.circuits
    router = Router(
        metrics,
        on_breaker=circuits.watch if circuits is not None else None,
        on_breaker_change=circuits.changed if circuits is not None else None,
    )
    cache = build_cache(config, redis_client=shared.state.client if shared.state is not None else None)
    if metrics is not None and cache is not None:
        metrics.watch_cache(cache)
    caching = Caching(cache, config) if cache is not None else None
    service = EmbeddingService(runtime, router, limiter=shared.limiter, caching=caching)
    json_parser = JsonParser()  # large bodies parsed off the event loop, in a worker process
    api = ApiHandlers(config, runtime, service, auth=auth, json_parser=json_parser)
    ops = OpsHandlers(
        runtime, auth=auth, metrics=metrics, ledger=ledger,
        breaker_states=lambda: {d.name: router.breaker_for(d).state for d in runtime.deployments},
    )
    for deployment in runtime.deployments:
        router.breaker_for(deployment)  # every deployment's circuit shows in /metrics from the start
    accounting = Accounting(ledger=ledger, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any = None) -> AsyncIterator[None]:
        if ledger is not None:
            await ledger.start()
        if cache is not None:
            await cache.start()
        try:
            await runtime.start()
            await shared.start()
            await probes.start()
            if metrics is not None:
                _watch_local_models(runtime, metrics)
            if workers is not None:
                workers.start()
            yield
        finally:
            await probes.aclose()
            if cache is not None:
                await cache.aclose()
            await shared.aclose()
            await runtime.aclose()
            await json_parser.aclose()
            if ledger is not None:
                await ledger.aclose()
            if workers is not None:
                await workers.aclose()
            logger.info("gateway stopped cleanly")

    routes = [
        Route("POST", "/v1/embeddings", api.embeddings, billed=True),
        Route("POST", "/embeddings", api.embeddings, billed=True),
        Route("POST", "/v1/contextualizedembeddings", api.contextualized, billed=True),
        Route("GET", "/v1/models", api.models),
        Route("GET", "/v1/models/{model}", api.model),
        Route("GET", "/v1/usage", ops.usage),
        Route("GET", "/healthz", ops.healthz),
        Route("GET", "/readyz", ops.readyz),
        Route("GET", "/openapi.json", ops.openapi),
    ]
    if metrics is not None:
        routes.append(Route("GET", "/metrics", ops.metrics_text))
    return FrontDoor(RouteTable(routes), lifespan=lifespan, log_format=log_format, on_complete=accounting.complete)


class SharedParts:
    """What ``state: redis://...`` brings: the pooled client, the rate limiter and the
    shared circuits; without it, the in-memory limiter and nothing else."""

    def __init__(
        self, limiter: Limiter, state: SharedState | None = None, circuits: SharedCircuits | None = None
    ) -> None:
        self.limiter = limiter
        self.state = state
        self.circuits = circuits

    @classmethod
    def build(cls, config: GatewayConfig) -> SharedParts:
        if config.state is None:
            return cls(RateLimiter())
        state = SharedState(config.state)
        return cls(SharedRateLimiter(state), state, SharedCircuits(state))

    async def start(self) -> None:
        if self.state is None:
            return
        if await self.state.ping():
            logger.info("shared state at %s answers", self.state.config.display)
        if self.circuits is not None:
            self.circuits.start()

    async def aclose(self) -> None:
        if self.circuits is not None:
            await self.circuits.aclose()
        if self.state is not None:
            await self.state.aclose()
