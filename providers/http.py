"""HTTP plumbing shared by the upstream providers (``openai``, ``perplexity``).

One :class:`UpstreamClient` per provider instance owns one pooled ``httpx.AsyncClient``.
Its transport is aiohttp's connection pool (``httpx-aiohttp``, as LiteLLM does): httpx's own
pool costs several times more CPU per request once many are in flight (encode/httpx#3215),
and a gateway pays that on every request. The httpx interface stays, so tests can still
hand in a client with ``httpx.MockTransport``.
Every call goes through :meth:`UpstreamClient.post_json`, so httpx exceptions and error
statuses become provider exceptions in exactly one place, and every message built from
upstream text passes through a :class:`Redactor` first: the API key (and any
secret-looking header value) reads ``[redacted]``.

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
HTTP date).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from providers.base import (
    DeploymentSpec,
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
    "DEFAULT_MAX_CONNECTIONS",
    "Redactor",
    "UpstreamClient",
    "check_bool",
    "check_positive_int",
    "check_url",
    "error_for_status",
    "is_whole",
    "parse_retry_after",
    "translate_transport_errors",
    "upstream_message",
]

DEFAULT_MAX_CONNECTIONS = 100
KEEPALIVE_EXPIRY_S = 30.0
#: Upstream text kept in an exception message, at most.
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


def _secret_header_values(headers: Mapping[str, str]) -> list[str]:
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
    if status in (401, 403):
        return UpstreamAuthError(
            f"{where} refused the gateway's credentials (HTTP {status})", status=status
        )
    raw_message, raw_param = upstream_message(response.content)
    message = _clip(redact(raw_message))
    if status in (400, 413, 422):
        param = redact(raw_param) if raw_param else None
        return InvalidInput(f"{where} rejected the request (HTTP {status}): {message}", param=param)
    retry_after = parse_retry_after(response.headers)
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


def _raise_for_aiohttp_cause(exc: httpx.HTTPError, *, where: str, timeout_s: float) -> None:
    """The aiohttp transport maps its errors to httpx's coarsely (a server that hung up
    becomes ``ConnectTimeout``); the aiohttp error it chains tells what really happened."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        raise UpstreamUnreachable(f"could not connect to {where}") from exc
    if isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError)):
        raise ProviderTimeout(f"{where} did not answer within {timeout_s:g} s") from exc
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        raise UpstreamConnectionError(f"the connection to {where} broke ({type(cause).__name__})") from exc


@contextmanager
def translate_transport_errors(
    *, deployment: str, redact: Redactor, timeout_s: float, max_connections: int
) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into provider exceptions."""
    where = f"the upstream of deployment {deployment!r}"
    try:
        yield
    except httpx.HTTPError as exc:
        _raise_for_aiohttp_cause(exc, where=where, timeout_s=timeout_s)
        if isinstance(exc, httpx.PoolTimeout):
            raise ProviderOverloaded(
                f"all {max_connections} connections of deployment {deployment!r} stayed busy "
                f"for {timeout_s:g} s"
            ) from exc
        if isinstance(exc, httpx.ConnectTimeout):
            raise ProviderTimeout(f"could not connect to {where} in time") from exc
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout(f"{where} did not answer within {timeout_s:g} s") from exc
        if isinstance(exc, httpx.DecodingError):
            raise UpstreamResponseError(f"{where} sent a body that could not be decoded") from exc
        if isinstance(exc, httpx.ConnectError):
            raise UpstreamUnreachable(f"could not connect to {where}: {_clip(redact(str(exc)) or 'refused')}") from exc
        if isinstance(exc, httpx.InvalidURL):
            raise ProviderError(f"deployment {deployment!r} has an invalid base_url: {redact(str(exc))}") from exc
        detail = redact(str(exc)) or "no detail"
        raise UpstreamConnectionError(
            f"the connection to {where} failed ({type(exc).__name__}: {_clip(detail)})"
        ) from exc


class UpstreamClient:
    """One pooled connection to an upstream: JSON in, JSON out, errors translated.

    Requests are ``httpx.Request`` objects handed straight to the pooled transport: the
    client layer on top (auth flows, redirects, cookie jars, URL merging) has nothing to do
    for one fixed POST and costs more CPU than the transport itself. ``transport`` replaces
    the pool this instance would build (tests pass ``httpx.MockTransport``); a transport
    passed in is left for its owner to close.
    """

    def __init__(
        self,
        *,
        deployment: str,
        base_url: str,
        api_key: str | None,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.deployment = deployment
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.redact = Redactor([api_key, *_secret_header_values(headers)])
        self._headers = self._build_headers(api_key, headers)
        self._urls: dict[str, httpx.URL] = {}
        self._given = transport
        self._transport: httpx.AsyncBaseTransport | None = transport
        # Our own count of connections in use: it tells "every connection busy" apart from
        # a slow upstream whatever the transport (aiohttp reports both as a connect timeout).
        self._slots = asyncio.Semaphore(max_connections)

    @classmethod
    def for_spec(
        cls, spec: DeploymentSpec, *, default_base_url: str, transport: httpx.AsyncBaseTransport | None = None
    ) -> UpstreamClient:
        """The client of a deployment, from its settings."""
        return cls(
            deployment=spec.name,
            base_url=spec.base_url or default_base_url,
            api_key=spec.api_key,
            headers=spec.headers,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            max_connections=spec.options.get("max_connections", DEFAULT_MAX_CONNECTIONS),
            transport=transport,
        )

    def _build_headers(self, api_key: str | None, extra: Mapping[str, str]) -> httpx.Headers:
        """Case-insensitive, so a configured ``Authorization`` replaces ours instead of doubling it."""
        headers = httpx.Headers({"content-type": "application/json", "accept": "application/json"})
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        for name, value in extra.items():
            headers[name] = value
        return headers

    def __repr__(self) -> str:
        return f"UpstreamClient(deployment={self.deployment!r}, base_url={self.base_url!r})"

    async def start(self) -> None:
        if self._transport is not None:
            return
        limits = httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        self._transport = AiohttpTransport(limits=limits)

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and transport is not self._given:
            await transport.aclose()

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        return url

    async def _acquire_slot(self, wait_s: float) -> None:
        if not self._slots.locked():  # a free connection: no timer needed
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderOverloaded(
                f"all {self.max_connections} connections of deployment {self.deployment!r} stayed busy "
                f"for {wait_s:g} s"
            ) from None

    async def post_json(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """POST ``body`` to ``base_url + path``; the parsed JSON of a 2xx answer."""
        transport = self._transport
        if transport is None:
            raise ProviderUnavailable(f"deployment {self.deployment!r} is not started (or already closed)")
        try:
            content = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            raise InvalidInput(f"the request cannot be sent upstream as JSON: {exc}") from exc
        headers = self._headers.copy()
        # The id comes from the client: forward it only when it cannot break the request.
        if request_id and request_id.isascii() and request_id.isprintable():
            headers["x-request-id"] = request_id
        wait_s = timeout_s or self.timeout_s
        timeouts = {"connect": self.connect_timeout_s, "read": wait_s, "write": wait_s, "pool": wait_s}
        request = httpx.Request("POST", self._url(path), headers=headers, content=content,
                                extensions={"timeout": timeouts})
        await self._acquire_slot(wait_s)
        try:
            with translate_transport_errors(
                deployment=self.deployment,
                redact=self.redact,
                timeout_s=wait_s,
                max_connections=self.max_connections,
            ):
                response = await transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        finally:
            self._slots.release()
        if not 200 <= response.status_code < 300:
            raise error_for_status(response, deployment=self.deployment, redact=self.redact)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamResponseError(
                f"the upstream of deployment {self.deployment!r} answered with invalid JSON "
                f"({exc.msg} at byte {exc.pos})",
                status=response.status_code,
            ) from exc


def check_url(base_url: str | None) -> str | None:
    """A problem with ``base_url``, or None when it is an http(s) URL with a host."""
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host name"
    if parts.query or parts.fragment:
        return "must not carry a query string or fragment"
    return None


def is_whole(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (YAML and JSON give ``true`` as a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(options: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    value = options.get(key)
    if value is None or (is_whole(value) and value >= 1):
        return []
    return [(key, "must be a whole number of at least 1")]


def check_bool(options: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    if key in options and not isinstance(options[key], bool):
        return [(key, "must be true or false")]
    return []
