"""Connections held to account: the limits uvicorn lacks, on its own HTTP protocol.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) and can answer 503
past a number of connections and tasks (``limit_concurrency``), but only once a request's
headers have arrived: a socket that sends nothing, or its headers a byte at a time
(slowloris), or a body shorter than its ``Content-Length``, is held for as long as the
client likes, and enough of them exhaust the file descriptors. :class:`GuardedProtocol`
subclasses uvicorn's httptools protocol with (the limits set by :func:`configure`):

- ``max_connections``: a connection past it is answered ``503`` and closed as soon as it
  is accepted, before reading anything (``limit_concurrency`` would wait for headers);
- ``header_timeout_s``: a request's headers must be complete within this, counted from
  the connection (first request) or from the request's first byte (later ones);
- ``body_timeout_s``: its whole body within this after the headers; past it the client
  gets ``408`` and the connection is closed. The request being served sees the
  disconnect, and the front door records it as 408 (:data:`CUT_KEY` in its scope says why).

Each cut is counted (``on_cut(reason)``, for ``gateway_connections_cut_total``; idle
keep-alive closes as ``keepalive_timeout``) and logged, at most once a second per reason
with the number cut since, so a flood cannot flood the log.

:func:`raise_fd_limit` lifts the process's open-file limit to what ``max_connections``
needs, as far as the hard limit allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BODY_READ_KEY", "CUT_KEY", "HANDLER_TASK_KEY", "HUNG_UP_KEY", "ConnectionLimits", "GuardedProtocol", "configure", "raise_fd_limit"]

#: Scope key set to ``"body_timeout"`` when the server cut a request's body short.
CUT_KEY = "gateway.cut"
#: Scope keys through which the protocol cancels a request whose client hung up: the
#: front door names the handler's task, the body reader says the body is all in, and the
#: protocol marks the scope before it cancels the task (the front door answers 499).
HANDLER_TASK_KEY = "gateway.handler_task"
BODY_READ_KEY = "gateway.body_read"
HUNG_UP_KEY = "gateway.hung_up"
OnCut = Callable[[str], None]
logger = logging.getLogger("gateway.connections")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s"
)
_REFUSED_BODY = (
    b'{"error":{"message":"too many open connections; retry shortly","type":"server_error",'
    b'"param":null,"code":"overloaded"}}'
)
_TIMED_OUT_BODY = (
    b'{"error":{"message":"the request body did not arrive in time","type":"invalid_request_error",'
    b'"param":null,"code":"request_timeout"}}'
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float


class _CutLog:
    """Counts every cut; logs one line per reason at most once a second."""

    def __init__(self, on_cut: OnCut | None) -> None:
        self.on_cut = on_cut
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def __call__(self, reason: str, client: Any) -> None:
        if self.on_cut is not None:
            self.on_cut(reason)
        count = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last.get(reason, 0.0) < 1.0:
            self._unlogged[reason] = count
            return
        self._last[reason], self._unlogged[reason] = now, 0
        who = f"{client[0]}:{client[1]}" if client else "a client"
        more = f" ({count - 1} more since the last line)" if count > 1 else ""
        # An idle keep-alive connection closing is routine; the others are a client cut off.
        level = logging.DEBUG if reason == "keepalive_timeout" else logging.WARNING
        logger.log(level, "closed the connection of %s: %s%s", who, reason, more)


_guard: tuple[ConnectionLimits | None, _CutLog] = (None, _CutLog(None))


def configure(limits: ConnectionLimits, on_cut: OnCut | None = None) -> None:
    """The limits :class:`GuardedProtocol` applies in this process, and where cuts are counted.

    Process-wide, because uvicorn builds the protocol itself (and, with several workers,
    in each worker process, where the app is built from the config): the app's composition
    root calls this once it has the config and the metrics."""
    global _guard
    _guard = (limits, _CutLog(on_cut))


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits given to :func:`configure` (none until
    then), for ``uvicorn.Config(http=GuardedProtocol)``."""

    _timer: asyncio.TimerHandle | None = None
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits, cut = _guard
        if limits is not None and len(self.connections) >= limits.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(_REFUSED % (len(_REFUSED_BODY), _REFUSED_BODY))
            transport.close()
            cut("max_connections", transport.get_extra_info("peername"))
            return
        super().connection_made(transport)
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            scope: Any = cycle.scope
            task = scope.get(HANDLER_TASK_KEY)
            if task is not None and scope.get(BODY_READ_KEY):
                scope[HUNG_UP_KEY] = True
                task.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:
            self._arm_headers()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        limits = _guard[0]
        if limits is not None and self.cycle is not None and self.cycle.more_body:
            self._arm(limits.body_timeout_s, "body_timeout")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        # The body's last bytes may have paused reading (uvicorn's flow control) after the
        # app's last receive; read on, so a client that hangs up is seen (connection_lost).
        if self.flow is not None:
            self.flow.resume_reading()

    def _arm_headers(self) -> None:
        limits = _guard[0]
        if limits is not None:
            self._arm(limits.header_timeout_s, "header_timeout")

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if reason == "body_timeout" and cycle is not None:
            cycle.scope[CUT_KEY] = reason  # type: ignore[literal-required]
            if not cycle.response_started:
                self.transport.write(_TIMED_OUT % (len(_TIMED_OUT_BODY), _TIMED_OUT_BODY))
        self.transport.close()
        _guard[1](reason, self.client)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            _guard[1]("keepalive_timeout", self.client)
        super().timeout_keep_alive_handler()


#: Descriptors besides client connections: model files, the ledger, upstream pools, logs.
_FD_HEADROOM = 512


def raise_fd_limit(max_connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``max_connections`` plus headroom (capped by the
    hard limit); the limit in force after, logged when it is short of the need."""
    try:
        import resource
    except ImportError:  # not on this platform
        return -1
    need = max_connections + _FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < need:
        logger.warning(
            "the open-file limit is %d (hard limit %d), short of the %d that server.max_connections=%d "
            "needs: connections may be refused by the system before the gateway refuses them",
            soft, hard, need, max_connections,
        )
    return int(soft)
