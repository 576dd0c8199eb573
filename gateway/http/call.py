"""One request as every route handler sees it: the ASGI scope and receive, its record,
and its path parameters, without Starlette's request machinery.

Building a Starlette ``Request`` (its header map, its ``State`` wrapper) per request is a
measurable share of what the gateway adds, so handlers read headers here; a handler that
wants a full ``Request`` (query parameters) asks :meth:`ApiCall.request` for one.
"""

from __future__ import annotations


from starlette.requests import Request
from starlette.types import Receive, Scope

from gateway.http.connections import BODY_READ_KEY
from gateway.record import RequestRecord

__all__ = ["ApiCall"]


class ApiCall:
    """The scope, receive and record of one request, and its path parameters."""

    __slots__ = ("scope", "receive", "record", "path_params")

    def __init__(
        self, scope: Scope, receive: Receive, record: RequestRecord, path_params: dict[str, str] | None = None
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.record = record
        self.path_params = path_params or {}

    def body_read(self) -> None:
        """The whole body is in: from now on a client that hangs up cancels the request."""
        self.scope[BODY_READ_KEY] = True

    @property
    def request_id(self) -> str:
        return self.record.request_id

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case, as ASGI servers give names)."""
        for key, value in self.scope["headers"]:
            if key == name:
                text: str = value.decode("latin-1")
                return text
        return None

    def request(self) -> Request:
        return Request(self.scope, self.receive)
