"""The HTTP face: routes, lifespan, and the app factory (one app per config)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.body import read_json
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, error_response
from gateway.middleware import GatewayMiddleware
from gateway.openapi import openapi_document
from gateway.routing import Router
from gateway.runtime import Runtime, build_runtime
from gateway.schema import parse_embeddings_request
from gateway.service import EmbeddingService
from providers.base import ProviderError

__all__ = ["create_app"]

logger = logging.getLogger("gateway")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=_JSON_OPTIONS),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


class Gateway:
    """Everything a request handler needs, built once from the config."""

    def __init__(self, config: GatewayConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.service = EmbeddingService(runtime, Router())
        self.started_at = int(time.time())

    async def embeddings(self, request: Request) -> Response:
        body = await read_json(request, limit=self.config.server.max_request_bytes)
        parsed = parse_embeddings_request(body)
        request.state.alias = parsed.model
        served = await self.service.embed(parsed, request_id=request.state.request_id)
        request.state.deployment = served.headers()["x-gateway-deployment"]
        content = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": vector}
                for index, vector in enumerate(served.vectors)
            ],
            "model": served.alias,
            "usage": served.usage(),
        }
        return json_response(content, headers=served.headers())

    async def models(self, request: Request) -> Response:
        data = []
        for name, alias in self.runtime.aliases.items():
            ready = all(d.ready for d in alias.deployments)
            entry: dict[str, Any] = {
                "id": name,
                "object": "model",
                "created": self.started_at,
                "owned_by": "embedding-gateway",
            }
            if ready:
                entry.update({
                    "dimensions": alias.dimensions,
                    "max_input_tokens": alias.max_input_tokens,
                    "encodings": alias.encodings(),
                })
            data.append(entry)
        return json_response({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        deployments = {
            d.name: {"alias": d.alias, "provider": d.config.provider, "ready": d.ready}
            for d in self.runtime.deployments
        }
        ready = self.runtime.ready
        return json_response(
            {"status": "ready" if ready else "starting", "deployments": deployments},
            status_code=200 if ready else 503,
        )

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document())


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    request_id = request.scope.get("state", {}).get("request_id")
    if exc.status_code == 405:
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"), request_id=request_id
        )
    return error_response(NotFound(f"no route {request.method} {request.url.path}"), request_id=request_id)


async def _gateway_exception(request: Request, exc: Exception) -> Response:
    return error_response(exc, request_id=request.scope.get("state", {}).get("request_id"))


def create_app(config: GatewayConfig, *, runtime: Runtime | None = None, log_format: str = "text") -> Starlette:
    """An ASGI app serving ``config``; its lifespan loads the models and closes the backends."""
    runtime = runtime or build_runtime(config)
    gateway = Gateway(config, runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.aclose()
            logger.info("gateway stopped cleanly")

    routes = [
        Route("/v1/embeddings", gateway.embeddings, methods=["POST"]),
        Route("/embeddings", gateway.embeddings, methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_exception,
            GatewayError: _gateway_exception,
            ProviderError: _gateway_exception,
        },
    )
    app.state.gateway = gateway
    app.add_middleware(GatewayMiddleware, log_format=log_format)
    return app
