"""The gateway's own OpenAPI 3.1 document, for every route it serves."""

from __future__ import annotations

import functools
from typing import Any

from gateway.schema import ENCODING_FORMATS

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "Invalid input: the message names the field and what is allowed",
        401: "Missing or wrong gateway key",
        403: "This key may not use that model",
        404: "Unknown model",
        413: "Body larger than the gateway's limit",
        415: "Content-Type is not application/json",
        429: "Rate limited; see Retry-After",
        502: "The upstream answered badly",
        503: "No deployment available, or overloaded",
        504: "The upstream timed out",
    }
    return {str(s): _json(_ERROR, descriptions[s]) for s in statuses}


_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_INPUT = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1},
    ]
}
_COMMON_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "description": "A model alias from the gateway's config"},
    "encoding_format": {"type": ["string", "null"], "enum": [*ENCODING_FORMATS, None]},
    "dimensions": {"type": ["integer", "null"], "minimum": 1},
    "user": {"type": ["string", "null"]},
    "metadata": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "string", "maxLength": 512},
        "maxProperties": 16,
    },
    "extra_body": {"type": ["object", "null"], "description": "Merged into the upstream body"},
    "input_type": {
        "type": ["string", "null"], "enum": ["query", "document", None],
        "description": "What the input is for; absent: the deployment's default_input_type",
    },
}
_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "cost": {
            "type": "object",
            "properties": {
                "input_cost": {"type": "number"},
                "total_cost": {"type": "number"},
                "currency": {"type": "string", "enum": ["USD"]},
            },
        },
    },
}
_EMBEDDING = {
    "type": "object",
    "properties": {
        "object": {"type": "string", "const": "embedding"},
        "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
    },
}


_MODEL = {"type": "object", "properties": {
    "id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
    "owned_by": {"type": "string"}, "dimensions": {"type": "integer"},
    "max_input_tokens": {"type": "integer"},
    "encodings": {"type": "array", "items": {"type": "string"}},
    "contextualized": {"type": "boolean"},
    "input_types": {"type": "array", "items": {"type": "string", "enum": ["query", "document"]},
                    "description": "input_type values the alias honours; empty: it ignores input_type"},
}}


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": item}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Embedding gateway", "version": "0.1.0"},
        "paths": {
            "/v1/embeddings": {"post": {
                "summary": "Create embeddings (OpenAI-compatible)",
                "operationId": "createEmbeddings",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["model", "input"],
                    "properties": {**_COMMON_FIELDS, "input": _INPUT},
                    "additionalProperties": True,
                }}}},
                "responses": {
                    "200": _json({
                        "type": "object",
                        "properties": {
                            "object": {"type": "string"}, "model": {"type": "string"},
                            "data": {"type": "array", "items": _EMBEDDING}, "usage": _USAGE,
                        },
                    }, "Embeddings in input order"),
                    **_errors(400, 401, 403, 404, 413, 415, 429, 502, 503, 504),
                },
            }},
            "/v1/contextualizedembeddings": {"post": {
                "summary": "Create contextualized embeddings (Perplexity-compatible)",
                "operationId": "createContextualizedEmbeddings",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["model", "input"],
                    "properties": {**_COMMON_FIELDS, "input": {
                        "type": "array", "minItems": 1, "maxItems": 512,
                        "items": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    }},
                }}}},
                "responses": {
                    "200": _json({
                        "type": "object",
                        "properties": {
                            "object": {"type": "string"}, "model": {"type": "string"}, "usage": _USAGE,
                            "data": {"type": "array", "items": {"type": "object", "properties": {
                                "object": {"type": "string"}, "index": {"type": "integer"},
                                "data": {"type": "array", "items": _EMBEDDING},
                            }}},
                        },
                    }, "One entry per document, each with its chunks' embeddings"),
                    **_errors(400, 401, 403, 404, 413, 415, 429, 502, 503, 504),
                },
            }},
            "/v1/usage": {"get": {
                "summary": "Usage per group (admin keys only when auth is on)",
                "operationId": "usage",
                "parameters": [
                    {"name": "start", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "end", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "group_by", "in": "query", "schema": {"type": "string", "default": "alias"},
                     "description": "key, alias, deployment, user or metadata.<name>"},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "object": {"type": "string"}, "group_by": {"type": "string"},
                    "data": {"type": "array", "items": {"type": "object", "properties": {
                        "group": {"type": ["string", "null"]}, "requests": {"type": "integer"},
                        "inputs": {"type": "integer"}, "prompt_tokens": {"type": "integer"},
                        "total_tokens": {"type": "integer"}, "cost": {"type": "number"},
                    }}},
                }}, "Usage per group"), **_errors(400, 401, 403, 404)},
            }},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/v1/models": {"get": {
                "summary": "List model aliases",
                "operationId": "listModels",
                "responses": {"200": _json(_list_of(_MODEL), "The configured aliases"), **_errors(401)},
            }},
            "/v1/models/{model}": {"get": {
                "summary": "One model alias (the openai SDK's models.retrieve)",
                "operationId": "retrieveModel",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_MODEL, "The alias"), **_errors(401, 404)},
            }},
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz",
                                 "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/readyz": {"get": {"summary": "Readiness: config loaded and every local model loaded",
                                "operationId": "readyz",
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Still starting")}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"},
                    "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]},
                }}}},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
