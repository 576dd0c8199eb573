"""The front door: the one outermost ASGI layer.

Every HTTP request gets an id and a :class:`~gateway.record.RequestRecord`, is matched in
the one route table, and is answered by its handler; any exception a handler raises is
turned into OpenAI's error shape here and nowhere else (:func:`gateway.errors.error_response`).
Then one access-log line, and the ``on_complete`` hook (usage accounting). The lifespan
protocol goes to Starlette's lifespan machinery.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any, AsyncContextManager, Callable

import orjson
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from gateway.errors import ClientClosedRequest, MethodNotAllowed, NotFound, error_response
from gateway.http.call import ApiCall
from gateway.http.connections import HANDLER_TASK_KEY, HUNG_UP_KEY
from gateway.http.routes import Handler, RouteTable
from gateway.record import RequestRecord

__all__ = ["FrontDoor", "REQUEST_ID_HEADER"]

REQUEST_ID_HEADER = "x-request-id"
#: Called once a request is over: its record, status and milliseconds.
OnComplete = Callable[[RequestRecord, int, float], None]
Lifespan = Callable[[Any], AsyncContextManager[None]]
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


_LOGGED_CHARS = 256


def _loggable(text: str) -> str:
    """``text`` fit for one line of the text log: what is not printable escaped (a newline
    in a path or an alias must not forge a line), and at most ``_LOGGED_CHARS`` long."""
    if len(text) > _LOGGED_CHARS:
        text = text[:_LOGGED_CHARS] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _has_request_id(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        if name == b"x-request-id":
            return True
    return False


async def _watched(handler: Handler, call: ApiCall) -> Response:
    """``handler(call)``, cancelled if the client hangs up once its body is read: its
    upstream calls and its place in a local queue are given up, and the request ends as
    :class:`ClientClosedRequest` (499) instead of being served to no one.

    The server's protocol does the watching (:class:`gateway.http.connections.GuardedProtocol`
    cancels the task named in the scope when the connection is lost), so a request pays
    for no watcher of its own: a watcher task per request cost 7% of single-text
    throughput (``bench/overhead.py --baseline``)."""
    task = asyncio.current_task()
    assert task is not None
    scope = call.scope
    scope[HANDLER_TASK_KEY] = task
    try:
        return await handler(call)
    except asyncio.CancelledError:
        if scope.get(HUNG_UP_KEY) and task.uncancel() == 0:
            raise ClientClosedRequest("the client closed the connection before its answer") from None
        raise
    finally:
        scope[HANDLER_TASK_KEY] = None


class FrontDoor:
    """Dispatches every request from ``routes``; answers every error; logs each request once."""

    def __init__(
        self,
        routes: RouteTable,
        *,
        lifespan: Lifespan,
        log_format: str = "text",
        on_complete: OnComplete | None = None,
    ) -> None:
        self.routes = routes
        self.log_format = log_format
        self.on_complete = on_complete
        self.lifespan_context = lifespan
        self._lifespan = Router(lifespan=lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan.lifespan(scope, receive, send)
        else:  # websockets: not a route of this gateway
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _incoming_request_id(scope) or _new_request_id()
        method, path = scope["method"], scope["path"]
        record = RequestRecord(request_id=request_id, method=method, path=path)
        started = time.perf_counter()
        status = 0
        try:
            response = await self._respond(scope, receive, record)
            status = response.status_code
            headers = response.raw_headers
            if not _has_request_id(headers):
                headers = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self._log(record, status, elapsed_ms)
            if self.on_complete is not None:
                try:
                    self.on_complete(record, status, elapsed_ms)
                except Exception as exc:  # accounting must never break a request that was answered
                    access_log.error("accounting failed for request %s: %s", request_id, type(exc).__name__)

    async def _respond(self, scope: Scope, receive: Receive, record: RequestRecord) -> Response:
        """The handler's answer, or the answer to whatever it raised."""
        try:
            match = self.routes.match(record.method, record.path)
            if match is None:
                raise NotFound(f"no route {record.method} {record.path}")
            route = match.route
            if route is None:
                allowed = ", ".join(match.allowed)
                raise MethodNotAllowed(
                    f"{record.method} is not allowed on {record.path}; allowed: {allowed}",
                    headers={"allow": allowed},
                )
            record.billed = route.billed
            call = ApiCall(scope, receive, record, match.params)
            if route.billed:
                return await _watched(route.handler, call)
            return await route.handler(call)
        except Exception as exc:
            return error_response(exc, request_id=record.request_id)

    def _log(self, record: RequestRecord, status: int, ms: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        alias = record.alias or "-"
        deployment = record.served.deployment if record.served is not None else None
        fields = {
            "method": record.method, "path": record.path, "alias": alias, "status": status,
            "ms": round(ms, 2), "request_id": record.request_id, "key_id": record.key_id,
            "deployment": deployment,
        }
        if self.log_format == "json":
            line = orjson.dumps(fields).decode()
        else:
            line = (
                f"{_loggable(record.method)} {_loggable(record.path)} alias={_loggable(alias)} status={status} "
                f"ms={ms:.1f} request_id={_loggable(record.request_id)}"
            )
        # ``access`` lets a JSON formatter (``serve --log-format json``) emit the fields as they are.
        access_log.info(line, extra={"access": fields})
