"""Reading a JSON request body within the size limit, without buffering past it."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.http.call import ApiCall
from gateway.http.connections import CUT_KEY

__all__ = ["read_json"]

_JSON_TYPES = ("application/json", "text/json")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this gateway's limit of {limit} bytes")


async def read_json(call: ApiCall, *, limit: int) -> Any:
    content_type = (call.header(b"content-type") or "application/json").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type!r}"
        )
    declared = call.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    receive = call.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if call.scope.get(CUT_KEY) == "body_timeout":
                raise RequestTimeout("the request body did not arrive within the server's body timeout")
            raise ClientClosedRequest("the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    call.body_read()
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
