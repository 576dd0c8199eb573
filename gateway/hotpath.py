"""A direct dispatch for the hot API routes, in front of Starlette's router.

Every embeddings request would otherwise pass Starlette's exception middleware, its route
table and its per-route wrappers: a fixed cost that is a large share of what a gateway adds
per request. The handlers and the error answers are the same ones Starlette would reach;
other methods and paths (405s, 404s, every other route) go on to Starlette unchanged.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, error_response
from providers.base import ProviderError

__all__ = ["HotRoutes"]

Handler = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, *, routes: dict[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except (GatewayError, ProviderError) as exc:
            response = error_response(exc, request_id=scope.get("state", {}).get("request_id"))
        await response(scope, receive, send)
