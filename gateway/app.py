"""The app factory: one Starlette app per config, with its lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.usage.accounting import Accounting
from gateway.auth import Authenticator
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, error_response
from gateway.http.api import ApiHandlers
from gateway.usage.ledger import UsageLedger
from gateway.usage.metrics import Metrics
from gateway.http.dispatch import GatewayMiddleware
from gateway.http.ops import OpsHandlers
from gateway.ratelimit import RateLimiter
from gateway.routing.router import Router
from gateway.runtime import Runtime, build_runtime
from gateway.service import EmbeddingService
from providers.base import ProviderError
from providers.local.microbatch import MicroBatcher

__all__ = ["GatewayApp", "create_app"]

logger = logging.getLogger("gateway")


class GatewayApp(Starlette):
    """Starlette with the gateway's layer outermost, outside Starlette's own error layer.

    The gateway layer answers every error itself, and serves the hot API routes without
    the Starlette layers at all (:mod:`gateway.http.call` says why).
    """

    def __init__(self, *, outermost: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outermost = outermost

    def build_middleware_stack(self) -> ASGIApp:
        return self._outermost(super().build_middleware_stack())


def _request_id(request: Request) -> str | None:
    request_id: str | None = request.scope.get("state", {}).get("request_id")
    return request_id


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: GatewayError = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = NotFound(f"no route {request.method} {request.url.path}")
    return error_response(error, request_id=_request_id(request))


async def _gateway_exception(request: Request, exc: Exception) -> Response:
    return error_response(exc, request_id=_request_id(request))


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


def _tune_gc() -> None:
    """Startup objects (models, config, modules) live as long as the process: move them out
    of the collector's way, and collect the young generation less often, so each request
    pays less garbage-collection time. Process-wide, so only for a server process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(
    config: GatewayConfig, *, runtime: Runtime | None = None, log_format: str = "text", tune_gc: bool = False
) -> GatewayApp:
    """An ASGI app serving ``config``; its lifespan loads the models and opens the ledger.

    ``tune_gc`` adjusts the process's garbage collector once the models are loaded (for
    ``serve``, which owns its process)."""
    runtime = runtime or build_runtime(config)
    metrics = Metrics(aliases=config.models) if config.server.metrics else None
    ledger = UsageLedger(config.usage.ledger) if config.usage.enabled else None
    if metrics is not None:
        metrics.watch_ledger(ledger)
    auth = Authenticator(config.auth)
    router = Router(metrics)
    service = EmbeddingService(runtime, router)
    api = ApiHandlers(config, runtime, service, auth=auth, limiter=RateLimiter())
    ops = OpsHandlers(
        runtime, auth=auth, metrics=metrics, ledger=ledger,
        breaker_states=lambda: {d.name: router.breaker_for(d).state for d in runtime.deployments},
    )
    for deployment in runtime.deployments:
        router.breaker_for(deployment)  # every deployment's circuit shows in /metrics from the start
    accounting = Accounting(ledger=ledger, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if ledger is not None:
            await ledger.start()
        try:
            await runtime.start()
            if metrics is not None:
                _watch_local_models(runtime, metrics)
            if tune_gc:
                _tune_gc()
            yield
        finally:
            await runtime.aclose()
            if ledger is not None:
                await ledger.aclose()
            logger.info("gateway stopped cleanly")

    routes = [
        Route("/v1/embeddings", api.embeddings_route, methods=["POST"]),
        Route("/embeddings", api.embeddings_route, methods=["POST"]),
        Route("/v1/contextualizedembeddings", api.contextualized_route, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/usage", ops.usage, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", ops.metrics_text, methods=["GET"]))
    hot_routes = {
        ("POST", "/v1/embeddings"): api.embeddings,
        ("POST", "/embeddings"): api.embeddings,
        ("POST", "/v1/contextualizedembeddings"): api.contextualized,
    }

    def outermost(inner: ASGIApp) -> ASGIApp:
        return GatewayMiddleware(
            inner, log_format=log_format, on_complete=accounting.complete, hot_routes=hot_routes
        )

    app = GatewayApp(
        outermost=outermost,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_exception,
            GatewayError: _gateway_exception,
            ProviderError: _gateway_exception,
            # Starlette's last-resort layer answers with this, in OpenAI's error shape, then
            # re-raises for the gateway layer outside it (which logs nothing more).
            Exception: _gateway_exception,
        },
    )
    app.state.runtime = runtime
    app.state.api = api
    app.state.metrics = metrics
    app.state.ledger = ledger
    return app
