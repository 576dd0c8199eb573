"""Parsing and validating request bodies into typed requests (no I/O, no policy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import ENCODING_FORMATS
from gateway.errors import InvalidRequest
from providers.base import InputType

__all__ = [
    "ENCODING_FORMATS",
    "INPUT_TYPES",
    "MODEL_MAX_CHARS",
    "EmbeddingsRequest",
    "ContextualizedRequest",
    "parse_contextualized_request",
    "parse_embeddings_request",
]

MAX_TOKEN_ID = 2**31 - 1
METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
USER_MAX_CHARS = 512
#: Model names are echoed in errors, logs and the ledger; no alias needs more.
MODEL_MAX_CHARS = 256
_KNOWN_FIELDS = frozenset(
    {"model", "input", "encoding_format", "dimensions", "user", "metadata", "extra_body", "input_type"}
)
INPUT_TYPES: tuple[InputType, ...] = ("query", "document")
_PROTECTED = ("model", "input")


@dataclass(kw_only=True, slots=True)
class EmbeddingsRequest:
    model: str
    inputs: list[str | list[int]]
    #: "text" for strings, "tokens" for token-id arrays.
    input_kind: str
    #: None: not sent; the alias's ``default_encoding_format`` applies, else ``float``.
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: ``query`` / ``document``; None: the deployment's ``default_input_type`` applies.
    input_type: InputType | None = None


@dataclass(kw_only=True, slots=True)
class ContextualizedRequest:
    model: str
    documents: list[list[str]]
    #: None: not sent; the alias's ``default_encoding_format`` applies, else ``base64_int8``.
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: ``query`` / ``document``; None: the deployment's ``default_input_type`` applies.
    input_type: InputType | None = None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_array(value: list[Any], param: str) -> list[int]:
    for position, token in enumerate(value):
        if not _is_token(token):
            raise InvalidRequest(
                f"{param}[{position}] must be a token id (an integer), not {_describe(token)}",
                param=f"{param}[{position}]",
            )
        if token < 0 or token > MAX_TOKEN_ID:
            raise InvalidRequest(
                f"{param}[{position}] is {token}; token ids are integers from 0 to {MAX_TOKEN_ID}",
                param=f"{param}[{position}]",
            )
    return value


def _parse_input(value: Any) -> tuple[list[str | list[int]], str]:
    allowed = "a string, an array of strings, an array of token ids, or an array of token-id arrays"
    if value is None:
        raise InvalidRequest(f"input is required: {allowed}", param="input", code="missing_required_parameter")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string", param="input")
        return [value], "text"
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be {allowed}, not {_describe(value)}", param="input")
    if not value:
        raise InvalidRequest("input must not be an empty array", param="input")
    first = value[0]
    if _is_token(first):
        return [_token_array(value, "input")], "tokens"
    kind = "text" if isinstance(first, str) else "tokens" if isinstance(first, list) else None
    if kind is None:
        raise InvalidRequest(
            f"input[0] must be a string, a token id or a token-id array, not {_describe(first)}",
            param="input[0]",
        )
    if kind == "text":
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                param = f"input[{index}]"
                if isinstance(item, str):
                    raise InvalidRequest(f"{param} must not be an empty string", param=param)
                raise InvalidRequest(
                    f"{param} must be a string like the other items, not {_describe(item)}", param=param
                )
        return value, kind
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if not isinstance(item, list):
            raise InvalidRequest(
                f"{param} must be a token-id array like the other items, not {_describe(item)}",
                param=param,
            )
        if not item:
            raise InvalidRequest(f"{param} must not be an empty array", param=param)
        _token_array(item, param)
    return value, kind


def _optional(body: dict[str, Any], key: str) -> Any:
    """A field sent as null means the same as a field left out."""
    return body.get(key)


def _parse_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model is required: the alias of a configured model", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"model must be a non-empty string, not {_describe(model)}", param="model")
    if len(model) > MODEL_MAX_CHARS:
        raise InvalidRequest(
            f"model must be at most {MODEL_MAX_CHARS} characters, not {len(model)}", param="model"
        )
    return model


def _parse_encoding(body: dict[str, Any], allowed: tuple[str, ...]) -> str | None:
    value = _optional(body, "encoding_format")
    if value is None:
        return None
    if value not in allowed:
        shown = value if isinstance(value, str) else _describe(value)
        raise InvalidRequest(
            f"encoding_format must be one of {', '.join(allowed)}, not {shown!r}", param="encoding_format"
        )
    return str(value)


def _parse_dimensions(body: dict[str, Any]) -> int | None:
    value = _optional(body, "dimensions")
    if value is None:
        return None
    if not _is_token(value) or value < 1:
        raise InvalidRequest(
            f"dimensions must be a positive integer, not {value!r}", param="dimensions"
        )
    return int(value)


def _parse_user(body: dict[str, Any]) -> str | None:
    value = _optional(body, "user")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > USER_MAX_CHARS:
        raise InvalidRequest(f"user must be a string of at most {USER_MAX_CHARS} characters", param="user")
    return value


def _parse_input_type(body: dict[str, Any]) -> InputType | None:
    value = _optional(body, "input_type")
    if value is None:
        return None
    for allowed in INPUT_TYPES:
        if value == allowed:
            return allowed
    shown = repr(value) if isinstance(value, str) else _describe(value)
    raise InvalidRequest(
        f"input_type must be one of {', '.join(INPUT_TYPES)} (or absent), not {shown}", param="input_type"
    )


def _parse_metadata(body: dict[str, Any]) -> dict[str, str]:
    value = _optional(body, "metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"metadata must be an object of strings, not {_describe(value)}", param="metadata")
    if len(value) > METADATA_MAX_KEYS:
        raise InvalidRequest(
            f"metadata has {len(value)} keys; at most {METADATA_MAX_KEYS} are allowed", param="metadata"
        )
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_CHARS or not key:
            raise InvalidRequest(
                f"metadata key {key[:80]!r} must be 1 to {METADATA_MAX_KEY_CHARS} characters", param="metadata"
            )
        if not isinstance(item, str) or len(item) > METADATA_MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"metadata.{key} must be a string of at most {METADATA_MAX_VALUE_CHARS} characters",
                param=f"metadata.{key}",
            )
    return dict(value)


def _parse_extra(body: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if not body.keys() <= known:
        extra = {k: v for k, v in body.items() if k not in known and v is not None}
    explicit = _optional(body, "extra_body")
    if explicit is not None:
        if not isinstance(explicit, dict):
            raise InvalidRequest(f"extra_body must be an object, not {_describe(explicit)}", param="extra_body")
        extra.update(explicit)
    for key in _PROTECTED:
        if key in extra:
            raise InvalidRequest(
                f"extra_body.{key} is not allowed: extra_body may never override model or input",
                param=f"extra_body.{key}",
            )
    return extra


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {_describe(body)}")
    return body


def parse_embeddings_request(body: Any) -> EmbeddingsRequest:
    body = _require_object(body)
    model = _parse_model(body)
    inputs, kind = _parse_input(body.get("input"))
    return EmbeddingsRequest(
        model=model,
        inputs=inputs,
        input_kind=kind,
        encoding_format=_parse_encoding(body, ENCODING_FORMATS),
        dimensions=_parse_dimensions(body),
        user=_parse_user(body),
        metadata=_parse_metadata(body),
        extra_body=_parse_extra(body, _KNOWN_FIELDS),
        input_type=_parse_input_type(body),
    )


def parse_contextualized_request(body: Any) -> ContextualizedRequest:
    body = _require_object(body)
    model = _parse_model(body)
    documents = body.get("input")
    if not isinstance(documents, list) or not documents:
        raise InvalidRequest(
            "input must be a non-empty array of documents, each an array of chunk strings",
            param="input",
        )
    for d, document in enumerate(documents):
        if not isinstance(document, list) or not document:
            raise InvalidRequest(f"input[{d}] must be a non-empty array of chunk strings", param=f"input[{d}]")
        for c, chunk in enumerate(document):
            if not isinstance(chunk, str) or not chunk:
                raise InvalidRequest(
                    f"input[{d}][{c}] must be a non-empty string, not {_describe(chunk)}",
                    param=f"input[{d}][{c}]",
                )
    return ContextualizedRequest(
        model=model,
        documents=documents,
        encoding_format=_parse_encoding(body, ENCODING_FORMATS),
        dimensions=_parse_dimensions(body),
        user=_parse_user(body),
        metadata=_parse_metadata(body),
        extra_body=_parse_extra(body, _KNOWN_FIELDS),
        input_type=_parse_input_type(body),
    )
