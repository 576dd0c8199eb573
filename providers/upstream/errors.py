"""How upstream failures become provider exceptions, in one place for every HTTP provider.

Every message built from upstream text passes through a :class:`Redactor` first: the API
key (and any secret-looking header value) reads ``[redacted]``.

Upstream status → exception (the gateway's answer in brackets)::

    400, 413, 422       InvalidInput with the upstream's message              [400]
    401, 403            UpstreamAuthError (no upstream text is kept)           [502]
    404                 UpstreamResponseError: the configured model or base_url
                        is wrong (the client chose neither), so fail over      [502]
    408, 504            ProviderTimeout                                        [504]
    409, 502, 503       ProviderUnavailable, retry_after from the headers      [503]
    429                 UpstreamRateLimited, retry_after from the headers      [429]
    any other non-2xx   UpstreamResponseError(status=...)                      [502]
    2xx, not JSON       UpstreamResponseError                                  [502]

httpx exception → exception::

    PoolTimeout                  ProviderOverloaded (every pooled connection is busy)
    other TimeoutException       ProviderTimeout
    DecodingError                UpstreamResponseError
    InvalidURL                   ProviderError (a deployment setting is wrong)
    ConnectError                 UpstreamUnreachable (refused, no route)                [503]
    any other httpx.HTTPError    UpstreamConnectionError (reset, dropped mid-answer)    [502]

``retry_after`` is read from ``retry-after-ms``, else ``retry-after`` (seconds or an
HTTP date), else (Google APIs, which send no header) the ``retryDelay`` of a
``google.rpc.RetryInfo`` in the body's ``error.details``. Google also answers a bad API
key with 400 and an ``ErrorInfo`` of reason ``API_KEY_INVALID``: that is an
UpstreamAuthError like a 401.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson

from providers.base import (
    INPUT,
    InvalidInput,
    ProviderError,
    ProviderOverloaded,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamRateLimited,
    UpstreamResponseError,
    UpstreamUnreachable,
)

__all__ = [
    "Redactor",
    "error_for_status",
    "parse_retry_after",
    "secret_header_values",
    "transport_error",
    "upstream_message",
]

MESSAGE_CHARS = 500
REDACTED = "[redacted]"
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "password", "signature", "cookie")


class Redactor:
    """Replaces every occurrence of the given secrets in a text with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def secret_header_values(headers: Mapping[str, str]) -> list[str]:
    return [v for k, v in headers.items() if any(w in k.lower() for w in _SECRET_HEADER_WORDS)]


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after``; None when absent or unreadable."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None or not raw:
        return seconds
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _number(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _location(loc: Any) -> str:
    """FastAPI's ``["body", "input", 3]`` as ``input[3]``."""
    if not isinstance(loc, list):
        return ""
    parts = loc[1:] if loc[:1] == ["body"] else loc
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _input_index(param: str | None) -> int | None:
    """N when an upstream names one input as ``input[N]`` (its position in the batch sent)."""
    if param is None or not param.startswith("input[") or not param.endswith("]"):
        return None
    digits = param[len("input[") : -1]
    return int(digits) if digits.isdigit() else None


def upstream_message(content: bytes) -> tuple[str, str | None]:
    """The message and offending parameter of an error body, whatever shape it has.

    Understood: OpenAI's ``{"error": {"message", "param"}}``, ``{"error": "text"}``,
    FastAPI's ``{"detail": [{"loc", "msg"}]}`` or ``{"detail": "text"}``,
    ``{"message": "text"}``, and plain text.
    """
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace").strip(), None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            param = error.get("param")
            return error["message"], param if isinstance(param, str) else None
        if isinstance(error, str):
            return error, None
        detail = payload.get("detail")
        if isinstance(detail, list):
            entries = [e for e in detail if isinstance(e, dict)]
            places = [_location(e.get("loc")) for e in entries]
            parts = [
                f"{place}: {e.get('msg', '')}" if place else str(e.get("msg", ""))
                for place, e in zip(places, entries)
            ]
            return "; ".join(parts), next((p for p in places if p), None)
        if isinstance(detail, str):
            return detail, None
        if isinstance(payload.get("message"), str):
            return str(payload["message"]), None
    return orjson.dumps(payload).decode(), None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return "(no message)"
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def error_for_status(response: httpx.Response, *, deployment: str, redact: Redactor) -> ProviderError:
    """The exception for a non-2xx answer (see the table in the module docstring)."""
    status = response.status_code
    where = f"the upstream of deployment {deployment!r}"
    details = _google_details(response.content) if status in (400, 429) else []
    if status in (401, 403) or any(d.get("reason") in _GOOGLE_AUTH_REASONS for d in details):
        return UpstreamAuthError(
            f"{where} refused the gateway's credentials (HTTP {status})", status=status
        )
    raw_message, raw_param = upstream_message(response.content)
    message = _clip(redact(raw_message))
    if status in (400, 413, 422):
        param = redact(raw_param) if raw_param else None
        index = _input_index(param)
        if param is None or index is None:
            return InvalidInput(f"{where} rejected the request (HTTP {status}): {message}", param=param)
        if message.startswith(f"{param}: "):  # the location as upstream_message writes it
            message = INPUT + message[len(param):]
        return InvalidInput(f"{where} rejected the request (HTTP {status}): {message}", index=index)
    retry_after = parse_retry_after(response.headers)
    if retry_after is None:
        retry_after = _google_retry_delay(details)
    if status == 429:
        return UpstreamRateLimited(
            f"{where} is rate limiting the gateway (HTTP 429): {message}",
            retry_after=retry_after,
            status=status,
        )
    if status in (408, 504):
        return ProviderTimeout(f"{where} timed out (HTTP {status}): {message}", status=status)
    if status in (409, 502, 503):
        return ProviderUnavailable(
            f"{where} is unavailable (HTTP {status}): {message}", retry_after=retry_after, status=status
        )
    if status == 404:
        return UpstreamResponseError(
            f"{where} answered 404: check the deployment's model and base_url ({message})",
            status=status,
        )
    return UpstreamResponseError(f"{where} answered HTTP {status}: {message}", status=status)


_GOOGLE_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"})


def _google_details(content: bytes) -> list[dict[str, Any]]:
    """The ``error.details`` objects of a Google API error body (empty for other shapes)."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return []
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _google_retry_delay(details: list[dict[str, Any]]) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail's ``retryDelay`` (``"17s"``, ``"0.5s"``)."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            return _number(delay[:-1])
    return None


def _aiohttp_cause_error(exc: httpx.HTTPError, *, where: str, timeout_s: float) -> ProviderError | None:
    """The aiohttp transport maps its errors to httpx's coarsely (a server that hung up
    becomes ``ConnectTimeout``); the aiohttp error it chains tells what really happened."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"could not connect to {where}")
    if isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError)):
        return ProviderTimeout(f"{where} did not answer within {timeout_s:g} s")
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return UpstreamConnectionError(f"the connection to {where} broke ({type(cause).__name__})")
    return None


def transport_error(
    exc: httpx.HTTPError, *, deployment: str, redact: Redactor, timeout_s: float, max_connections: int
) -> ProviderError:
    """The provider exception for an httpx exception raised while talking to an upstream
    (raise it ``from exc``)."""
    where = f"the upstream of deployment {deployment!r}"
    refined = _aiohttp_cause_error(exc, where=where, timeout_s=timeout_s)
    if refined is not None:
        return refined
    if isinstance(exc, httpx.PoolTimeout):
        return ProviderOverloaded(
            f"all {max_connections} connections of deployment {deployment!r} stayed busy for {timeout_s:g} s"
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderTimeout(f"could not connect to {where} in time")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{where} did not answer within {timeout_s:g} s")
    if isinstance(exc, httpx.DecodingError):
        return UpstreamResponseError(f"{where} sent a body that could not be decoded")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"could not connect to {where}: {_clip(redact(str(exc)) or 'refused')}")
    if isinstance(exc, httpx.InvalidURL):
        return ProviderError(f"deployment {deployment!r} has an invalid base_url: {redact(str(exc))}")
    detail = redact(str(exc)) or "no detail"
    return UpstreamConnectionError(f"the connection to {where} failed ({type(exc).__name__}: {_clip(detail)})")
