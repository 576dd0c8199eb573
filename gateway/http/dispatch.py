"""The outermost layer: request ids, the access log line, the last-resort error handler, and
the direct dispatch of the hot API routes."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Mapping

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.call import ApiCall
from gateway.errors import error_response, status_of

__all__ = ["GatewayMiddleware", "REQUEST_ID_HEADER"]

REQUEST_ID_HEADER = "x-request-id"
#: Called once a request is over: (path, request state, status, milliseconds, request id).
OnComplete = Callable[[str, dict[str, Any], int, float, str], None]
#: A hot route's handler: the request in, a response with its whole body out.
HotHandler = Callable[[ApiCall], Awaitable[Response]]
_MAX_REQUEST_ID = 128
access_log = logging.getLogger("gateway.access")


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    """Unique per process start (a random prefix) and per request (a counter): ids need to
    be unique, not secret, and a uuid4 per request costs an urandom call."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1").strip()
            if text and len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
    return None


def _has_request_id(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        if name == b"x-request-id":
            return True
    return False


class GatewayMiddleware:
    """Gives every request an id, logs one line per request, and turns escaped errors into JSON.

    Handlers normally raise errors that ``app.py`` answers; anything that escapes them
    still gets OpenAI's error shape here instead of a bare 500 page and a stack trace.

    ``hot_routes`` maps ``(method, path)`` to a handler this layer calls itself, with an
    :class:`ApiCall`, sending its response directly; every other request goes on to the
    app inside (Starlette), which answers 404s and 405s for the hot paths too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log_format: str = "text",
        on_complete: OnComplete | None = None,
        hot_routes: Mapping[tuple[str, str], HotHandler] | None = None,
    ) -> None:
        self.app = app
        self.log_format = log_format
        self.on_complete = on_complete
        self.hot_routes = hot_routes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or _new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 0
        try:
            handler = self.hot_routes.get((scope["method"], scope["path"]))
            if handler is not None:
                status = await self._serve_hot(handler, ApiCall(scope, receive), send, request_id)
            else:
                status = await self._serve_app(scope, receive, send, request_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self._log(scope, state, status, elapsed_ms, request_id)
            if self.on_complete is not None:
                try:
                    self.on_complete(scope["path"], state, status, elapsed_ms, request_id)
                except Exception as exc:  # accounting must never break a request that was answered
                    access_log.error("accounting failed for request %s: %s", request_id, type(exc).__name__)

    async def _serve_hot(self, handler: HotHandler, call: ApiCall, send: Send, request_id: str) -> int:
        try:
            response = await handler(call)
        except Exception as exc:
            response = error_response(exc, request_id=request_id)
        headers = response.raw_headers
        if not _has_request_id(headers):
            headers = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        return response.status_code

    async def _serve_app(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        status = 0
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                if not _has_request_id(headers):
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                # Starlette's error layer has logged it, and answered it unless a response
                # was already under way; raising on would only add a traceback to the log.
                return status
            status = status_of(exc).status
            await error_response(exc, request_id=request_id)(scope, receive, send)
        return status

    def _log(self, scope: Scope, state: dict[str, Any], status: int, ms: float, request_id: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        alias = state.get("alias", "-")
        fields = {
            "method": scope["method"], "path": scope["path"], "alias": alias, "status": status,
            "ms": round(ms, 2), "request_id": request_id, "key_id": state.get("key_id"),
            "deployment": state.get("deployment"),
        }
        if self.log_format == "json":
            line = orjson.dumps(fields).decode()
        else:
            line = f'{scope["method"]} {scope["path"]} alias={alias} status={status} ms={ms:.1f} request_id={request_id}'
        # ``access`` lets a JSON formatter (``serve --log-format json``) emit the fields as they are.
        access_log.info(line, extra={"access": fields})
