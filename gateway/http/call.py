"""One API request as the hot handlers see it, without Starlette's request machinery.

Every embeddings request would otherwise build a Starlette ``Request``, its header map
and its ``State`` wrapper, and pass Starlette's error middleware, route table and
per-route wrappers: a fixed cost that was a large share of what the gateway adds per
request. :class:`GatewayMiddleware <gateway.http.dispatch.GatewayMiddleware>` hands the hot
routes an :class:`ApiCall` directly; Starlette routes reach the same handlers through
:meth:`ApiCall.of`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

__all__ = ["ApiCall"]


class ApiCall:
    """The ASGI scope and receive of one request, and its state.

    ``state`` is the scope's ``state`` dict, the one Starlette's ``request.state`` writes
    to: what a handler learns (alias, key id, user, metadata, the answer) is put there
    for the access log and the usage accounting, which run after the response.
    """

    __slots__ = ("scope", "receive", "state")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.state: dict[str, Any] = scope.setdefault("state", {})

    @classmethod
    def of(cls, request: Request) -> ApiCall:
        return cls(request.scope, request.receive)

    @property
    def request_id(self) -> str | None:
        request_id: str | None = self.state.get("request_id")
        return request_id

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case, as ASGI servers give names)."""
        for key, value in self.scope["headers"]:
            if key == name:
                text: str = value.decode("latin-1")
                return text
        return None
