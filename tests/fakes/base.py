"""What both fake upstreams share: request recording, bearer auth, the fault plan,
the pre-response faults, and the ``/_fake/*`` control routes.

Control routes (no auth):
    POST /_fake/faults     a fault command, see ``FaultPlan.configure``
    GET  /_fake/faults     pending faults, fail_rate, injected counts
    POST /_fake/reset      clear the faults and the request log
    GET  /_fake/requests   ``?limit=N``: count, in-flight gauges, recorded requests
    GET  /_fake/health     ``{"ok": true}``
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .faults import MODES, Fault, FaultPlan
from .recording import RecordedRequest, RequestLog

__all__ = [
    "BadJSON",
    "FakeUpstream",
    "Handler",
    "JSONBytes",
    "Rejected",
    "current_request",
    "json_response",
    "openai_error",
]

_RAW_SEND = "fakes.raw_send"
#: The request being served, for handlers that read its path or query (Gemini's model).
current_request: contextvars.ContextVar[Request] = contextvars.ContextVar("fake_request")
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class BadJSON:
    """Stands in for the body of a request that was not valid JSON."""

    def __init__(self, error: str, pos: int) -> None:
        self.error = error
        self.pos = pos


class Rejected(Exception):
    """Raised by a handler to answer with ``response`` (validation errors)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


Handler = Callable[[Any, "Fault | None"], Awaitable[Response]]


class JSONBytes(Response):
    media_type = "application/json"


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JSONBytes(orjson.dumps(payload), status_code=status, headers=headers)


def openai_error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error_type = type or _STATUS_TYPES.get(status, "server_error" if status >= 500 else "error")
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json_response(body, status, headers)


def _close_connection(scope: Scope, *, reset: bool) -> None:
    # ASGI has no way to drop a connection, so reach uvicorn's transport through the
    # bound ``send`` method of its request cycle, saved before Starlette wrapped it.
    cycle = getattr(scope.get(_RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection: not served by uvicorn?")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


class _Drop(Response):
    """Closes the connection instead of answering (after half a body for mid_body)."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when = when

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.when == "mid_body":
            partial = b'{"object": "list", "data": [{"object": "embedding", "index": 0, '
            headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": partial, "more_body": True})
        _close_connection(scope, reset=self.when == "reset")
        # Let connection_lost run, so uvicorn knows the client is gone and logs nothing.
        for _ in range(3):
            await asyncio.sleep(0)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class FakeUpstream:
    """ASGI app base: records every request, checks the bearer key, injects faults.

    Subclasses pass their API routes as ``(path, handler)``; a handler gets the parsed
    JSON body (a ``BadJSON`` if it did not parse) and the fault for this request, and
    applies the faults that corrupt a valid response itself (``current_request`` holds
    the request). Providers whose errors or auth differ from OpenAI's override
    ``error_response`` and ``auth_error``.
    """

    def __init__(
        self,
        routes: Iterable[tuple[str, Handler]],
        *,
        api_key: str | None = None,
        log_size: int = 1000,
        fault_modes: Iterable[str] = MODES,
    ) -> None:
        self.api_key = api_key
        self.faults = FaultPlan(supported=fault_modes)
        self.log = RequestLog(maxlen=log_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        api = [Route(path, self._endpoint(h), methods=["POST"]) for path, h in routes]
        control = [
            Route("/_fake/faults", self._post_faults, methods=["POST"]),
            Route("/_fake/faults", self._get_faults, methods=["GET"]),
            Route("/_fake/reset", self._reset, methods=["POST"]),
            Route("/_fake/requests", self._requests, methods=["GET"]),
            Route("/_fake/health", self._health, methods=["GET"]),
        ]
        self.app = Starlette(routes=api + control)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await self.app(scope, receive, send)

    def reset(self) -> None:
        """Forget queued and random faults and every recorded request."""
        self.faults.reset()
        self.log.clear()

    def release_waiters(self) -> None:
        """End every delay/hang now (their connections are closed); thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._release_now)
        except RuntimeError:
            pass

    def _release_now(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    #: The header the key comes in: ``authorization`` (Bearer) or the key alone (``api-key``).
    auth_header = "authorization"
    #: Set by a provider whose 401 is its own short message for any wrong or missing Bearer
    #: key (Cohere, Voyage, Jina); None: OpenAI's two messages.
    bad_key_message: str | None = None

    def _query_error(self, request: Request) -> Response | None:
        """A refusal of the request's query string (none by default)."""
        return None

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """An error answer in this provider's own shape (OpenAI's here)."""
        return openai_error(status, message, type=type, code=code, headers=headers)

    def auth_error(self, request: Request) -> Response | None:
        """The answer to a request without the right key, or None (``auth_header`` here:
        Bearer in ``authorization``, else the key alone)."""
        if self.api_key is None:
            return None
        authorization = request.headers.get(self.auth_header)
        if self.bad_key_message is not None:
            if authorization != f"Bearer {self.api_key}":
                return self.error_response(401, self.bad_key_message)
            return None
        if self.auth_header != "authorization":
            if authorization != self.api_key:
                return openai_error(401, f"Access denied: missing or invalid {self.auth_header} header.", code="401")
            return None
        if not authorization:
            message = "You didn't provide an API key. Use 'Authorization: Bearer YOUR_KEY'."
            return self.error_response(401, message, code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return self.error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.log.enter()
            try:
                return await self._serve(request, handler)
            except Rejected as exc:
                return exc.response
            finally:
                self.log.leave()

        return endpoint

    async def _serve(self, request: Request, handler: Handler) -> Response:
        raw = await request.body()
        body: Any
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            body = BadJSON(exc.msg, exc.pos)
        path: str = request.scope["path"]
        entry = RecordedRequest(request.method, path, dict(request.headers), body, raw, query=request.url.query)
        if isinstance(body, BadJSON):
            entry.json = None
        self.log.append(entry)
        current_request.set(request)
        denied = self.auth_error(request)
        if denied is None:
            denied = self._query_error(request)
        if denied is not None:
            return denied
        fault = self.faults.take(path)
        if fault is not None:
            entry.fault = fault.mode
            early = await self._early_fault(fault, request)
            if early is not None:
                return early
        return await handler(body, fault)

    async def _early_fault(self, fault: Fault, request: Request) -> Response | None:
        if fault.mode == "status":
            headers = {}
            if fault["retry_after"] is not None:
                headers["retry-after"] = str(fault["retry_after"])
            if fault["retry_after_ms"] is not None:
                headers["retry-after-ms"] = str(fault["retry_after_ms"])
            if fault["body"] is not None:
                return json_response(fault["body"], fault["status"], headers)
            message = fault["message"] or f"Injected fault: status {fault['status']}"
            return self.error_response(
                fault["status"], message, type=fault["type"], code=fault["code"], headers=headers
            )
        if fault.mode in ("delay", "hang"):
            if await self._sleep(request, float(fault["seconds"])):
                return _Drop("before_response")
            return None
        if fault.mode == "drop":
            return _Drop(fault["when"])
        if fault.mode == "invalid_json":
            return JSONBytes(fault["body"].encode())
        return None

    async def _sleep(self, request: Request, seconds: float) -> bool:
        """Wait ``seconds``; True if the client left or the server is stopping first."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        released: asyncio.Future[None] = loop.create_future()
        self._waiters.add(released)
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            done, _ = await asyncio.wait(
                {released, gone}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
            return bool(done)
        finally:
            self._waiters.discard(released)
            released.cancel()
            gone.cancel()

    async def _post_faults(self, request: Request) -> Response:
        try:
            self.faults.configure(orjson.loads(await request.body()))
        except (ValueError, TypeError, KeyError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(self.faults.to_json())

    async def _get_faults(self, request: Request) -> Response:
        return json_response(self.faults.to_json())

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return json_response({"ok": True})

    async def _requests(self, request: Request) -> Response:
        limit = request.query_params.get("limit")
        return json_response(self.log.to_json(int(limit) if limit else None))

    async def _health(self, request: Request) -> Response:
        return json_response({"ok": True})
