"""HTTP plumbing shared by the upstream providers (every module of ``providers.upstream``).

One :class:`UpstreamClient` per provider instance owns one connection pool. Its transport
is aiohttp's pool under httpx's interface (``httpx-aiohttp``, as LiteLLM does): httpx's own
pool costs several times more CPU per request once many are in flight (encode/httpx#3215),
and a gateway pays that on every request. Every call goes through
:meth:`UpstreamClient.post_json`, so transport errors and error statuses become provider
exceptions in one place (:mod:`providers.upstream.errors`, whose docstring holds the table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from providers.base import (
    DeploymentSpec,
    InvalidInput,
    ProviderOverloaded,
    ProviderUnavailable,
    UpstreamResponseError,
)
from providers.upstream.errors import (
    Redactor,
    error_for_status,
    parse_retry_after,
    secret_header_values,
    transport_error,
    upstream_message,
)

__all__ = [
    "AuthStyle",
    "DEFAULT_MAX_CONNECTIONS",
    "Redactor",
    "UpstreamClient",
    "error_for_status",
    "parse_retry_after",
    "transport_error",
    "upstream_message",
]

DEFAULT_MAX_CONNECTIONS = 100
KEEPALIVE_EXPIRY_S = 30.0
#: How the API key travels: ``Authorization: Bearer <key>``, or the key alone in an
#: ``api-key`` (Azure) or ``x-goog-api-key`` (Gemini) header, or not at all.
AuthStyle = Literal["bearer", "api-key", "x-goog-api-key", "none"]


class UpstreamClient:
    """One pooled connection to an upstream: JSON in, JSON out, errors translated.

    Requests are ``httpx.Request`` objects handed straight to the pooled transport: the
    client layer on top (auth flows, redirects, cookie jars, URL merging) has nothing to do
    for one fixed POST and costs more CPU than the transport itself. ``transport`` replaces
    the pool this instance would build (tests pass ``httpx.MockTransport``); a transport
    passed in is left for its owner to close. The requests carry no ``Host`` or
    ``Content-Length`` header (aiohttp's pool sets both itself), so a transport that does
    not, such as httpx's own ``AsyncHTTPTransport``, must add them.
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
        auth: AuthStyle = "bearer",
        query: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``auth`` says how ``api_key`` is sent (see :data:`AuthStyle`); ``query`` is
        appended to every URL (Azure's ``api-version``)."""
        self.deployment = deployment
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._query = "?" + urlencode(dict(query)) if query else ""
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.redact = Redactor([api_key, *secret_header_values(headers)])
        self._headers = self._build_headers(api_key, headers, auth)
        self._urls: dict[str, httpx.URL] = {}
        self._given = transport
        self._transport: httpx.AsyncBaseTransport | None = transport
        # Our own count of connections in use: it tells "every connection busy" apart from
        # a slow upstream whatever the transport (aiohttp reports both as a connect timeout).
        self._slots = asyncio.Semaphore(max_connections)

    @classmethod
    def for_spec(
        cls,
        spec: DeploymentSpec,
        *,
        default_base_url: str,
        auth: AuthStyle = "bearer",
        query: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
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
            auth=auth,
            query=query,
            transport=transport,
        )

    @staticmethod
    def _build_headers(api_key: str | None, extra: Mapping[str, str], auth: AuthStyle) -> httpx.Headers:
        """Case-insensitive, so a configured ``Authorization`` replaces ours instead of doubling it."""
        headers = httpx.Headers({"content-type": "application/json", "accept": "application/json"})
        if api_key and auth == "bearer":
            headers["authorization"] = f"Bearer {api_key}"
        elif api_key and auth != "none":
            headers[auth] = api_key
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
            url = self._urls[path] = httpx.URL(self.base_url + path + self._query)
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
        payload, _ = await self.post_json_with_headers(path, body, request_id=request_id, timeout_s=timeout_s)
        return payload

    async def post_json_with_headers(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> tuple[Any, httpx.Headers]:
        """As :meth:`post_json`, with the answer's headers (TEI counts tokens in one)."""
        transport = self._transport
        if transport is None:
            raise ProviderUnavailable(f"deployment {self.deployment!r} is not started (or already closed)")
        try:
            content = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            raise InvalidInput(f"the request cannot be sent upstream as JSON: {exc}") from exc
        # ``Headers(other)`` copies a list; ``stream=`` with ``read()`` skips httpx's body
        # encoding and its header rebuilds (aiohttp sets Host and Content-Length itself).
        headers = httpx.Headers(self._headers)
        # The id comes from the client: forward it only when it cannot break the request.
        if request_id and request_id.isascii() and request_id.isprintable():
            headers["x-request-id"] = request_id
        wait_s = timeout_s or self.timeout_s
        timeouts = {"connect": self.connect_timeout_s, "read": wait_s, "write": wait_s, "pool": wait_s}
        request = httpx.Request("POST", self._url(path), headers=headers, stream=httpx.ByteStream(content),
                                extensions={"timeout": timeouts})
        request.read()
        await self._acquire_slot(wait_s)
        try:
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise transport_error(
                exc, deployment=self.deployment, redact=self.redact, timeout_s=wait_s,
                max_connections=self.max_connections,
            ) from exc
        finally:
            self._slots.release()
        if not 200 <= response.status_code < 300:
            raise error_for_status(response, deployment=self.deployment, redact=self.redact)
        try:
            return orjson.loads(response.content), response.headers
        except orjson.JSONDecodeError as exc:
            raise UpstreamResponseError(
                f"the upstream of deployment {self.deployment!r} answered with invalid JSON "
                f"({exc.msg} at byte {exc.pos})",
                status=response.status_code,
            ) from exc
