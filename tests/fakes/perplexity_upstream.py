"""A fake Perplexity upstream: ``POST /v1/embeddings`` (seed 001) and
``POST /v1/contextualizedembeddings`` (seed 000).

Vectors: ``fake_matrix(texts, dimensions, salt=...)`` for ``/v1/embeddings`` and
``contextual_matrix(doc, dimensions, salt=...)`` for each document, encoded with
``int8_of`` (``base64_int8``, the default) or ``binary_of`` (``base64_binary``).
Validation errors are 422 in FastAPI's shape (see ``perplexity_schema``); a missing or
wrong key is 401. ``usage`` carries ``cost`` in USD from ``config.prices``. The
``nan`` fault cannot be expressed in int8 or bits, so it is refused.

Run standalone: ``python -m fakes.perplexity_upstream --port 0``.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.responses import Response

from .base import FakeUpstream, json_response
from .faults import MODES, Fault, arrange
from .perplexity_schema import (
    PerplexityConfig,
    validate_contextualized,
    validate_embeddings,
)
from .server import serve_forever
from .vectors import binary_of, contextual_matrix, fake_matrix, int8_of

__all__ = ["PerplexityConfig", "PerplexityUpstream", "main"]

_LEVELLED = ("wrong_count", "bad_index", "reorder")


def _encode(matrix: npt.NDArray[np.float32], fmt: str, fault: Fault | None) -> list[str]:
    packed = int8_of(matrix) if fmt == "base64_int8" else binary_of(matrix)
    cut = 1 if fault is not None and fault.mode == "wrong_dims" else 0
    return [
        base64.b64encode(row.tobytes()[: len(row) - cut]).decode("ascii") for row in packed
    ]


def _items(codes: list[str], fault: Fault | None) -> list[dict[str, Any]]:
    return [
        {"object": "embedding", "index": index, "embedding": codes[row]}
        for index, row in arrange(fault, len(codes))
    ]


class PerplexityUpstream(FakeUpstream):
    """The fake Perplexity upstream app; pass a ``PerplexityConfig`` or its fields."""

    def __init__(self, config: PerplexityConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else PerplexityConfig(**options)
        self.config = config
        super().__init__(
            [
                ("/v1/embeddings", self._embeddings),
                ("/v1/contextualizedembeddings", self._contextualized),
            ],
            api_key=config.api_key,
            log_size=config.log_size,
            fault_modes=[mode for mode in MODES if mode != "nan"],
        )

    def _payload(self, data: list[dict[str, Any]], model: str, tokens: int) -> Response:
        payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if self.config.include_usage:
            cost = round(tokens * self.config.prices.get(model, 0.0) / 1e6, 12)
            payload["usage"] = {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "cost": {"input_cost": cost, "total_cost": cost, "currency": "USD"},
            }
        return json_response(payload)

    async def _embeddings(self, body: Any, fault: Fault | None) -> Response:
        request = validate_embeddings(body, self.config)
        matrix = fake_matrix(request.items, request.dims, salt=self.config.salt)
        data = _items(_encode(matrix, request.fmt, fault), fault)
        return self._payload(data, request.model, request.tokens)

    async def _contextualized(self, body: Any, fault: Fault | None) -> Response:
        request = validate_contextualized(body, self.config)
        docs = request.docs
        level = fault["level"] if fault is not None and fault.mode in _LEVELLED else None
        doc_fault = fault if level == "documents" else None
        data = []
        for index, d in arrange(doc_fault, len(docs)):
            matrix = contextual_matrix(docs[d], request.dims, salt=self.config.salt)
            chunk_fault = fault if level == "chunks" and d == len(docs) - 1 else None
            codes = _encode(matrix, request.fmt, fault)
            data.append({"object": "list", "index": index, "data": _items(codes, chunk_fault)})
        return self._payload(data, request.model, request.tokens)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fakes.perplexity_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--salt", default="")
    parser.add_argument("--log-size", type=int, default=1000, help="requests kept in the log")
    args = parser.parse_args(argv)
    app = PerplexityUpstream(
        api_key=args.api_key,
        include_usage=not args.no_usage,
        salt=args.salt,
        log_size=args.log_size,
    )
    serve_forever(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
