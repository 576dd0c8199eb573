"""Route handlers of the public API: embeddings, contextualized embeddings, models.

Each authenticates, reads and parses the body, authorises the alias, and hands the
request to the pipeline (:mod:`gateway.service`); what it learns goes on the request's
record as soon as it is known, so even a refused request is accounted under its alias.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

import orjson
from starlette.responses import Response

from gateway.auth import Authenticator
from gateway.caching import cache_directive
from gateway.config import GatewayConfig, KeyConfig
from gateway.errors import ModelNotFound
from gateway.http.body import JsonParser, read_json
from gateway.http.call import ApiCall
from gateway.http.responses import JSONBytesResponse, json_response, served_headers
from gateway.record import RequestRecord, Served
from gateway.runtime import Runtime
from gateway.schema import (
    MODEL_MAX_CHARS,
    ContextualizedRequest,
    EmbeddingsRequest,
    parse_contextualized_request,
    parse_embeddings_request,
)
from gateway.service import EmbeddingService

__all__ = ["ApiHandlers"]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
ParsedT = TypeVar("ParsedT", EmbeddingsRequest, ContextualizedRequest)


class ApiHandlers:
    """The public API."""

    def __init__(
        self,
        config: GatewayConfig,
        runtime: Runtime,
        service: EmbeddingService,
        *,
        auth: Authenticator,
        json_parser: JsonParser | None = None,
    ) -> None:
        self.config = config
        self.json_parser = json_parser
        self.runtime = runtime
        self.service = service
        self.auth = auth
        self.started_at = int(time.time())

    def _authenticate(self, call: ApiCall) -> KeyConfig | None:
        key = self.auth.authenticate(call.header(b"authorization"))
        call.record.authenticated = True
        if key is not None:
            call.record.key_id = key.id
        return key

    async def _read(self, call: ApiCall, parse: Callable[[Any], ParsedT]) -> ParsedT:
        body = await read_json(call, limit=self.config.server.max_request_bytes, parser=self.json_parser)
        record = call.record
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and len(model) <= MODEL_MAX_CHARS:
            record.alias = model
        parsed = parse(body)
        record.user, record.metadata = parsed.user, parsed.metadata
        return parsed

    async def embeddings(self, call: ApiCall) -> Response:
        key = self._authenticate(call)
        parsed = await self._read(call, parse_embeddings_request)
        call.record.inputs = len(parsed.inputs)
        self.auth.authorize(key, parsed.model)
        directive = cache_directive(call.header(b"cache-control"))
        served = await self.service.embed(parsed, record=call.record, key=key, cache=directive)
        return _answer(call.record, served, _flat(served))

    async def contextualized(self, call: ApiCall) -> Response:
        key = self._authenticate(call)
        parsed = await self._read(call, parse_contextualized_request)
        call.record.inputs = sum(len(d) for d in parsed.documents)
        self.auth.authorize(key, parsed.model)
        served = await self.service.embed_contextualized(parsed, record=call.record, key=key)
        return _answer(call.record, served, _nested(served))

    async def models(self, call: ApiCall) -> Response:
        key = self._authenticate(call)
        data = [self._model_entry(name) for name in self.runtime.aliases if self.auth.allows(key, name)]
        return json_response({"object": "list", "data": data})

    async def model(self, call: ApiCall) -> Response:
        """One entry of ``models`` (the openai SDK's ``models.retrieve``); an alias this key
        may not use is as unknown as one that does not exist, as in the list."""
        key = self._authenticate(call)
        name = call.path_params["model"]
        if name not in self.runtime.aliases or not self.auth.allows(key, name):
            known = ", ".join(sorted(n for n in self.runtime.aliases if self.auth.allows(key, n))) or "none"
            raise ModelNotFound(f"model {name!r} does not exist; available models: {known}", param="model")
        return json_response(self._model_entry(name))

    def _model_entry(self, name: str) -> dict[str, Any]:
        alias = self.runtime.aliases[name]
        entry: dict[str, Any] = {
            "id": name, "object": "model", "created": self.started_at, "owned_by": "embedding-gateway",
        }
        if all(d.ready for d in alias.deployments):
            entry.update({
                "dimensions": alias.dimensions,
                "max_input_tokens": alias.max_input_tokens,
                "encodings": alias.encodings(),
                "input_types": alias.input_types(),
                "contextualized": all(d.capabilities.contextualized for d in alias.deployments),
            })
        return entry


def _answer(record: RequestRecord, served: Served, data: list[dict[str, Any]]) -> Response:
    record.served = served
    content = {"object": "list", "data": data, "model": served.alias, "usage": served.usage()}
    return JSONBytesResponse(
        orjson.dumps(content, option=_JSON_OPTIONS), raw_headers=served_headers(served), headers=record.rate_headers
    )


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
