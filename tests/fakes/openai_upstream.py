"""A fake OpenAI-style ``POST /v1/embeddings`` upstream (seeds 003 and 004).

Vectors are ``fake_matrix(inputs, dimensions, salt=config.salt)``; tokens are counted
by ``fake_token_count``. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 for invalid requests and
exceeded limits, 401 for a missing or wrong key, 404 for an unknown model.

Run standalone: ``python -m fakes.openai_upstream --port 0 --dims 1024``.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from .base import BadJSON, FakeUpstream, JSONBytes, Rejected, openai_error
from .faults import Fault, arrange
from .server import serve_forever
from .vectors import Item, fake_matrix, fake_token_count

__all__ = ["DEFAULT_OPENAI_MODELS", "OpenAIConfig", "OpenAIUpstream", "main"]

DEFAULT_OPENAI_MODELS: Mapping[str, int] = {"text-embedding-3-small": 1536, "fake-minilm": 384}
_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True, kw_only=True)
class OpenAIConfig:
    """Options of the fake OpenAI upstream.

    models: served model names and their native dimensions.
    supports_dimensions: honour ``dimensions``; if False it is refused with 400, or
        ignored (full vectors returned) when ``ignore_unsupported_dimensions``.
    api_key: if set, requests need ``Authorization: Bearer <api_key>``.
    include_usage: False omits ``usage`` from responses.
    reject_unknown_fields: 400 on fields OpenAI does not define (default: accepted).
    max_inputs / max_input_tokens / max_request_tokens: OpenAI's published limits.
    salt: mixed into every vector's seed, to tell two upstreams apart.
    log_size: how many requests the log keeps.
    """

    models: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_OPENAI_MODELS))
    supports_dimensions: bool = True
    ignore_unsupported_dimensions: bool = False
    api_key: str | None = None
    include_usage: bool = True
    reject_unknown_fields: bool = False
    max_inputs: int = 2048
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    salt: str = ""
    log_size: int = 1000


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> Rejected:
    return Rejected(openai_error(400, message, param=param, code=code))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_array(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(t) and t >= 0 for t in value)


def _parse_input(raw: Any) -> list[Item]:
    if isinstance(raw, str):
        items: list[Item] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        items = list(raw)
    elif isinstance(raw, list) and raw and _token_array(raw):
        items = [raw]
    elif isinstance(raw, list) and raw and all(_token_array(x) for x in raw):
        items = list(raw)
    else:
        raise _invalid(
            "'$.input' is invalid. Expected a string, an array of strings, an array of "
            "non-negative integers or an array of such arrays.",
            param="input",
        )
    for i, item in enumerate(items):
        if len(item) == 0:
            raise _invalid(f"'$.input[{i}]' is invalid: it must not be empty.", param="input")
    return items


class OpenAIUpstream(FakeUpstream):
    """The fake OpenAI upstream app; pass an ``OpenAIConfig`` or its fields."""

    def __init__(self, config: OpenAIConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else OpenAIConfig(**options)
        self.config = config
        super().__init__(
            [("/v1/embeddings", self._embeddings)],
            api_key=config.api_key,
            log_size=config.log_size,
        )

    def _validate(self, body: Any) -> tuple[str, list[Item], int, str]:
        cfg = self.config
        if isinstance(body, BadJSON):
            raise _invalid(f"We could not parse the JSON body of your request: {body.error}")
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid("you must provide a model parameter", param="model")
        unknown = sorted(set(body) - _FIELDS)
        if cfg.reject_unknown_fields and unknown:
            raise _invalid(f"Unrecognized request argument supplied: {unknown[0]}")
        if "input" not in body:
            raise _invalid("'input' is a required property", param="input")
        if model not in cfg.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise Rejected(openai_error(404, message, code="model_not_found"))
        native = cfg.models[model]
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _invalid(
                f"Invalid value for 'encoding_format' = {fmt!r}. "
                "Supported values are 'float' and 'base64'.",
                param="encoding_format",
            )
        dims = self._dimensions(body.get("dimensions"), native)
        if "user" in body and not isinstance(body["user"], (str, type(None))):
            raise _invalid("'$.user' is invalid: expected a string.", param="user")
        items = _parse_input(body["input"])
        self._check_limits(items)
        return model, items, dims, fmt

    def _dimensions(self, dims: Any, native: int) -> int:
        if dims is None:
            return native
        if not self.config.supports_dimensions:
            if self.config.ignore_unsupported_dimensions:
                return native
            raise _invalid(
                "This model does not support specifying dimensions.", param="dimensions"
            )
        if not _is_int(dims) or not 1 <= dims <= native:
            raise _invalid(
                f"Invalid value for 'dimensions' = {dims!r}. "
                f"Must be an integer between 1 and {native}.",
                param="dimensions",
            )
        return int(dims)

    def _check_limits(self, items: Sequence[Item]) -> None:
        cfg = self.config
        if len(items) > cfg.max_inputs:
            raise _invalid(
                f"Too many inputs. The max number of inputs is {cfg.max_inputs}. "
                f"We received {len(items)}.",
                param="input",
            )
        total = 0
        for i, item in enumerate(items):
            tokens = fake_token_count(item)
            if tokens > cfg.max_input_tokens:
                raise _invalid(
                    f"This model's maximum context length is {cfg.max_input_tokens} tokens, "
                    f"however you requested {tokens} tokens in input[{i}]. "
                    "Please reduce your prompt.",
                    param="input",
                    code="context_length_exceeded",
                )
            total += tokens
        if total > cfg.max_request_tokens:
            raise _invalid(
                f"Requested {total} tokens, max {cfg.max_request_tokens} tokens per request",
                param="input",
                code="max_tokens_per_request",
            )

    async def _embeddings(self, body: Any, fault: Fault | None) -> Response:
        model, items, dims, fmt = self._validate(body)
        matrix = fake_matrix(items, dims, salt=self.config.salt)
        mode = fault.mode if fault else None
        if mode == "wrong_dims" and dims > 1:
            matrix = matrix[:, :-1]
        if mode == "nan":
            matrix[0, 0] = np.nan
        pairs = arrange(fault, len(items))
        payload: dict[str, Any] = {"object": "list", "data": [], "model": model}
        if self.config.include_usage:
            tokens = sum(fake_token_count(item) for item in items)
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        data = payload["data"]
        if fmt == "base64":
            little = matrix.astype("<f4", copy=False)
            for index, row in pairs:
                vector = base64.b64encode(little[row].tobytes()).decode("ascii")
                data.append({"object": "embedding", "index": index, "embedding": vector})
        elif mode == "nan":
            # orjson would write NaN as null; the literal is what a careless server sends.
            for index, row in pairs:
                vector = matrix[row].tolist()
                data.append({"object": "embedding", "index": index, "embedding": vector})
            return JSONBytes(json.dumps(payload).encode())
        else:
            for index, row in pairs:
                data.append({"object": "embedding", "index": index, "embedding": matrix[row]})
        return JSONBytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fakes.openai_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dims", type=int, help="native size of every default model")
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=DIMS",
        help="serve this model (repeatable; replaces the defaults)",
    )
    parser.add_argument("--api-key")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--no-dimensions", action="store_true")
    parser.add_argument("--salt", default="")
    parser.add_argument("--log-size", type=int, default=1000, help="requests kept in the log")
    args = parser.parse_args(argv)
    models = dict(DEFAULT_OPENAI_MODELS)
    if args.model:
        default = args.dims or 1536
        models = {
            name: int(d) if d else default
            for name, _, d in (m.partition("=") for m in args.model)
        }
    elif args.dims:
        models = {name: args.dims for name in models}
    app = OpenAIUpstream(
        models=models,
        api_key=args.api_key,
        include_usage=not args.no_usage,
        supports_dimensions=not args.no_dimensions,
        salt=args.salt,
        log_size=args.log_size,
    )
    serve_forever(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
