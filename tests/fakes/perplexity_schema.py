"""Request validation of the fake Perplexity upstream (seeds 001 and 000).

Errors are answered as FastAPI does, with 422 and
``{"detail": [{"type", "loc", "msg", "input"?, "ctx"?}, ...]}``; field errors of one
request are reported together. Token limits are checked only once the request is
well-formed, and are reported as ``value_error`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import BadJSON, Rejected, json_response
from .vectors import fake_token_count

__all__ = [
    "DEFAULT_PRICES",
    "PPLX_CONTEXT_MODELS",
    "PPLX_MODELS",
    "ContextRequest",
    "EmbedRequest",
    "PerplexityConfig",
    "validate_contextualized",
    "validate_embeddings",
]

PPLX_MODELS: Mapping[str, int] = {"pplx-embed-v1-0.6b": 1024, "pplx-embed-v1-4b": 2560}
PPLX_CONTEXT_MODELS: Mapping[str, int] = {
    "pplx-embed-context-v1-0.6b": 1024,
    "pplx-embed-context-v1-4b": 2560,
}
DEFAULT_PRICES: Mapping[str, float] = {
    "pplx-embed-v1-0.6b": 0.004,
    "pplx-embed-v1-4b": 0.05,
    "pplx-embed-context-v1-0.6b": 0.004,
    "pplx-embed-context-v1-4b": 0.05,
}
_FORMATS = ("base64_int8", "base64_binary")


@dataclass(frozen=True, kw_only=True)
class PerplexityConfig:
    """Options of the fake Perplexity upstream.

    models / context_models: model names of each endpoint and their native sizes.
    prices: USD per million tokens, for ``usage.cost``.
    api_key: if set, requests need ``Authorization: Bearer <api_key>``.
    include_usage: False omits ``usage`` from responses.
    The ``max_*`` limits and ``min_dimensions`` are the documented ones.
    salt: mixed into every vector's seed, to tell two upstreams apart.
    """

    models: Mapping[str, int] = field(default_factory=lambda: dict(PPLX_MODELS))
    context_models: Mapping[str, int] = field(default_factory=lambda: dict(PPLX_CONTEXT_MODELS))
    prices: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    api_key: str | None = None
    include_usage: bool = True
    max_inputs: int = 512
    max_input_tokens: int = 32_768
    max_request_tokens: int = 120_000
    max_documents: int = 512
    max_chunks: int = 16_000
    max_document_tokens: int = 32_768
    min_dimensions: int = 128
    salt: str = ""
    log_size: int = 1000


@dataclass(frozen=True)
class EmbedRequest:
    model: str
    dims: int
    fmt: str
    items: list[str]
    tokens: int


@dataclass(frozen=True)
class ContextRequest:
    model: str
    dims: int
    fmt: str
    docs: list[list[str]]
    tokens: int


_NO_INPUT = object()


class _Errors:
    def __init__(self) -> None:
        self.detail: list[dict[str, Any]] = []

    def add(
        self, type: str, loc: list[str | int], msg: str, *, input: Any = _NO_INPUT,
        **ctx: Any,
    ) -> None:
        entry: dict[str, Any] = {"type": type, "loc": ["body", *loc], "msg": msg}
        if input is not _NO_INPUT:
            entry["input"] = input
        if ctx:
            entry["ctx"] = ctx
        self.detail.append(entry)

    def value_error(self, loc: list[str | int], message: str) -> None:
        self.add("value_error", loc, f"Value error, {message}", error=message)

    def check(self) -> None:
        if self.detail:
            raise Rejected(json_response({"detail": self.detail}, 422))


def _common(
    body: Any, models: Mapping[str, int], cfg: PerplexityConfig
) -> tuple[_Errors, str, int, str]:
    """Check the body's shape, ``model``, ``dimensions`` and ``encoding_format``."""
    errors = _Errors()
    if isinstance(body, BadJSON):
        errors.add("json_invalid", [body.pos], "JSON decode error", input={}, error=body.error)
        errors.check()
    if not isinstance(body, dict):
        errors.add(
            "model_attributes_type", [],
            "Input should be a valid dictionary or object to extract fields from", input=body,
        )
        errors.check()
    if "input" not in body:
        errors.add("missing", ["input"], "Field required")
    model = body.get("model")
    names = " or ".join(f"'{name}'" for name in models)
    if "model" not in body:
        errors.add("missing", ["model"], "Field required")
    elif model not in models:
        errors.add(
            "literal_error", ["model"], f"Input should be {names}", input=model, expected=names
        )
    fmt = body.get("encoding_format") or "base64_int8"
    if fmt not in _FORMATS:
        expected = " or ".join(f"'{f}'" for f in _FORMATS)
        errors.add(
            "enum", ["encoding_format"], f"Input should be {expected}",
            input=fmt, expected=expected,
        )
    dims = body.get("dimensions")
    top = max(models.values())
    native = models.get(model, top) if isinstance(model, str) else top
    if dims is None:
        dims = native
    elif not isinstance(dims, int) or isinstance(dims, bool):
        errors.add("int_type", ["dimensions"], "Input should be a valid integer", input=dims)
    elif dims < cfg.min_dimensions:
        errors.add(
            "greater_than_equal", ["dimensions"],
            f"Input should be greater than or equal to {cfg.min_dimensions}",
            input=dims, ge=cfg.min_dimensions,
        )
    elif dims > top:
        errors.add(
            "less_than_equal", ["dimensions"], f"Input should be less than or equal to {top}",
            input=dims, le=top,
        )
    elif dims > native:
        errors.value_error(
            ["dimensions"],
            f"dimensions must be between {cfg.min_dimensions} and {native} for {model}",
        )
    return errors, str(model), int(dims) if isinstance(dims, int) else native, str(fmt)


def _check_strings(errors: _Errors, values: list[Any], loc: list[str | int]) -> None:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            errors.add("string_type", [*loc, i], "Input should be a valid string", input=value)
        elif not value:
            errors.add(
                "string_too_short", [*loc, i], "String should have at least 1 character",
                input=value, min_length=1,
            )


def _check_length(
    errors: _Errors, values: list[Any], loc: list[str | int], *, top: int | None = None
) -> bool:
    if not values:
        errors.add(
            "too_short", loc, "List should have at least 1 item after validation, not 0",
            field_type="List", min_length=1, actual_length=0,
        )
        return False
    if top is not None and len(values) > top:
        errors.add(
            "too_long", loc,
            f"List should have at most {top} items after validation, not {len(values)}",
            field_type="List", max_length=top, actual_length=len(values),
        )
        return False
    return True


def validate_embeddings(body: Any, cfg: PerplexityConfig) -> EmbedRequest:
    errors, model, dims, fmt = _common(body, cfg.models, cfg)
    raw = body.get("input", _NO_INPUT)
    items: list[Any] = [raw] if isinstance(raw, str) else raw
    if raw is _NO_INPUT:
        pass
    elif isinstance(raw, str):
        if not raw:
            errors.add(
                "string_too_short", ["input"], "String should have at least 1 character",
                input=raw, min_length=1,
            )
    elif not isinstance(raw, list):
        errors.add("string_type", ["input"], "Input should be a valid string", input=raw)
    elif _check_length(errors, raw, ["input"], top=cfg.max_inputs):
        _check_strings(errors, raw, ["input"])
    errors.check()
    counts = [fake_token_count(item) for item in items]
    for i, count in enumerate(counts):
        if count > cfg.max_input_tokens:
            errors.value_error(
                ["input", i], f"input {i} has {count} tokens, more than {cfg.max_input_tokens}"
            )
    total = sum(counts)
    if total > cfg.max_request_tokens:
        errors.value_error(
            ["input"], f"the inputs have {total} tokens, more than {cfg.max_request_tokens}"
        )
    errors.check()
    return EmbedRequest(model, dims, fmt, list(items), total)


def validate_contextualized(body: Any, cfg: PerplexityConfig) -> ContextRequest:
    errors, model, dims, fmt = _common(body, cfg.context_models, cfg)
    docs = body.get("input", _NO_INPUT)
    if docs is _NO_INPUT:
        pass
    elif not isinstance(docs, list):
        errors.add("list_type", ["input"], "Input should be a valid list", input=docs)
    elif _check_length(errors, docs, ["input"], top=cfg.max_documents):
        for d, doc in enumerate(docs):
            if not isinstance(doc, list):
                errors.add("list_type", ["input", d], "Input should be a valid list", input=doc)
            elif _check_length(errors, doc, ["input", d]):
                _check_strings(errors, doc, ["input", d])
    errors.check()
    chunks = sum(len(doc) for doc in docs)
    if chunks > cfg.max_chunks:
        errors.value_error(["input"], f"{chunks} chunks in total, more than {cfg.max_chunks}")
        errors.check()
    total = 0
    for d, doc in enumerate(docs):
        count = sum(fake_token_count(chunk) for chunk in doc)
        if count > cfg.max_document_tokens:
            errors.value_error(
                ["input", d],
                f"document {d} has {count} tokens, more than {cfg.max_document_tokens}",
            )
        total += count
    if total > cfg.max_request_tokens:
        errors.value_error(
            ["input"], f"the documents have {total} tokens, more than {cfg.max_request_tokens}"
        )
    errors.check()
    return ContextRequest(model, dims, fmt, docs, total)
