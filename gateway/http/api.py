"""Route handlers of the public API: embeddings, contextualized embeddings, models.

The two embeddings handlers take an :class:`ApiCall` (the middleware dispatches them
directly); ``models`` is an ordinary Starlette endpoint.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.http.body import read_json
from gateway.http.call import ApiCall
from gateway.config import GatewayConfig, KeyConfig
from gateway.ratelimit import RateDecision, RateLimiter
from gateway.runtime import Runtime
from gateway.schema import (
    ContextualizedRequest,
    EmbeddingsRequest,
    parse_contextualized_request,
    parse_embeddings_request,
)
from gateway.service import EmbeddingService, RequestTrace, Served
from providers.upstream.wire import estimate_tokens

__all__ = ["ApiHandlers", "json_response"]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
ParsedT = TypeVar("ParsedT", EmbeddingsRequest, ContextualizedRequest)


class JSONBytesResponse(Response):
    """A response whose body is already JSON bytes; its headers are built once, as bytes
    (Starlette's generic header handling is a measurable share of a gateway's request)."""

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        raw_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        if raw_headers:
            raw += raw_headers
        if headers:
            raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
        self.raw_headers = raw


def json_response(content: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytesResponse(orjson.dumps(content, option=_JSON_OPTIONS), status_code=status_code, headers=headers)


class ApiHandlers:
    """The public API. Each handler authenticates, parses, authorises, rate-limits, serves."""

    def __init__(
        self,
        config: GatewayConfig,
        runtime: Runtime,
        service: EmbeddingService,
        *,
        auth: Authenticator,
        limiter: RateLimiter,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.service = service
        self.auth = auth
        self.limiter = limiter
        self.started_at = int(time.time())

    def _authenticate(self, authorization: str | None, state: dict[str, Any]) -> KeyConfig | None:
        key = self.auth.authenticate(authorization)
        if key is not None:
            state["key_id"] = key.id
        return key

    async def _read(self, call: ApiCall, parse: Callable[[Any], ParsedT]) -> ParsedT:
        """The parsed body; what it says is put on the request's state as soon as it is
        known, so even a refused request is accounted under its alias, user and metadata."""
        body = await read_json(call, limit=self.config.server.max_request_bytes)
        state = call.state
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            state["alias"] = body["model"]
        parsed = parse(body)
        state["user"], state["metadata"] = parsed.user, parsed.metadata
        return parsed

    async def embeddings(self, call: ApiCall) -> Response:
        state = call.state
        key = self._authenticate(call.header(b"authorization"), state)
        parsed = await self._read(call, parse_embeddings_request)
        state["inputs"] = len(parsed.inputs)
        self.auth.authorize(key, parsed.model)
        tokens = 0
        if key is not None and key.tpm is not None:
            counts, _ = await self.service.count_tokens(self.service.resolve(parsed.model), parsed.inputs)
            tokens = sum(counts)
        decision = self.limiter.check(key, tokens)
        state["trace"] = trace = RequestTrace()
        served = await self.service.embed(parsed, request_id=call.request_id, trace=trace)
        return self._answer(state, key, served, tokens, decision, _flat(served))

    async def contextualized(self, call: ApiCall) -> Response:
        state = call.state
        key = self._authenticate(call.header(b"authorization"), state)
        parsed = await self._read(call, parse_contextualized_request)
        state["inputs"] = sum(len(d) for d in parsed.documents)
        self.auth.authorize(key, parsed.model)
        tokens = sum(estimate_tokens(chunk) for doc in parsed.documents for chunk in doc)
        decision = self.limiter.check(key, tokens if key is not None and key.tpm is not None else 0)
        state["trace"] = trace = RequestTrace()
        served = await self.service.embed_contextualized(parsed, request_id=call.request_id, trace=trace)
        return self._answer(state, key, served, tokens, decision, _nested(served))

    async def embeddings_route(self, request: Request) -> Response:
        """``embeddings`` as a Starlette endpoint."""
        return await self.embeddings(ApiCall.of(request))

    async def contextualized_route(self, request: Request) -> Response:
        """``contextualized`` as a Starlette endpoint."""
        return await self.contextualized(ApiCall.of(request))

    def _answer(
        self,
        state: dict[str, Any],
        key: KeyConfig | None,
        served: Served,
        charged: int,
        decision: RateDecision,
        data: list[dict[str, Any]],
    ) -> Response:
        state["served"] = served
        state["deployment"] = served.deployment
        if key is not None and key.tpm is not None:
            self.limiter.adjust_tokens(key, served.prompt_tokens - charged)
        content = {"object": "list", "data": data, "model": served.alias, "usage": served.usage()}
        return JSONBytesResponse(
            orjson.dumps(content, option=_JSON_OPTIONS), raw_headers=served.raw_headers(), headers=decision.headers
        )

    async def models(self, request: Request) -> Response:
        key = self._authenticate(request.headers.get("authorization"), request.scope.setdefault("state", {}))
        data = []
        for name, alias in self.runtime.aliases.items():
            if not self.auth.allows(key, name):
                continue
            entry: dict[str, Any] = {
                "id": name, "object": "model", "created": self.started_at, "owned_by": "embedding-gateway",
            }
            if all(d.ready for d in alias.deployments):
                entry.update({
                    "dimensions": alias.dimensions,
                    "max_input_tokens": alias.max_input_tokens,
                    "encodings": alias.encodings(),
                    "contextualized": all(d.capabilities.contextualized for d in alias.deployments),
                })
            data.append(entry)
        return json_response({"object": "list", "data": data})


def _flat(served: Served) -> list[dict[str, Any]]:
    return [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(served.vectors)]


def _nested(served: Served) -> list[dict[str, Any]]:
    documents, start = [], 0
    for index, count in enumerate(served.groups):
        chunks = served.vectors[start : start + count]
        start += count
        documents.append({
            "object": "list",
            "index": index,
            "data": [{"object": "embedding", "index": c, "embedding": v} for c, v in enumerate(chunks)],
        })
    return documents
