"""A fake Voyage AI ``POST /v1/embeddings`` upstream
(https://docs.voyageai.com/reference/embeddings-api).

Request: ``input`` (a string or a list of at most 1,000 strings, whose tokens together stay
under the model's per-request cap), ``model``, ``input_type`` (null, ``query``,
``document``), ``truncation`` (default true; false makes an over-long text a 400),
``output_dimension`` (256, 512, 1024, 2048 on the models that take it), ``output_dtype``
(``float``, ``int8``, ``uint8``, ``binary``, ``ubinary``; other than float only on those
models), ``encoding_format`` (null or ``base64``).
Answer: ``{"object": "list", "data": [{"object": "embedding", "embedding", "index"}],
"model", "usage": {"total_tokens"}}``. Errors: ``{"detail": ...}`` with 400, 401, 429, 500.

Vectors: ``typed_matrix(texts, dims, input_type, salt=config.salt)``; a null
``input_type`` embeds the text with no prompt, so it is the plain ``fake_matrix``.

Run standalone: ``python -m fakes.voyage_upstream --port 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.responses import Response

from .base import BadJSON, FakeUpstream, Rejected, json_response
from .faults import Fault
from .server import fake_main
from .typed_outputs import answer, faulted_rows, typed_rows
from .vectors import fake_token_count, typed_matrix

__all__ = ["VOYAGE_MODELS", "VoyageConfig", "VoyageModel", "VoyageUpstream", "main"]

FLEXIBLE = (256, 512, 1024, 2048)
DTYPES = ("float", "int8", "uint8", "binary", "ubinary")


@dataclass(frozen=True)
class VoyageModel:
    """A served model: default width, ``output_dimension`` values (empty: fixed width,
    float only), context per text and tokens per request."""

    dimensions: int
    output_dimensions: tuple[int, ...]
    context: int
    request_tokens: int


VOYAGE_MODELS: Mapping[str, VoyageModel] = {
    "voyage-4-large": VoyageModel(1024, FLEXIBLE, 32_000, 120_000),
    "voyage-4": VoyageModel(1024, FLEXIBLE, 32_000, 320_000),
    "voyage-4-lite": VoyageModel(1024, FLEXIBLE, 32_000, 1_000_000),
    "voyage-3-large": VoyageModel(1024, FLEXIBLE, 32_000, 120_000),
    "voyage-3.5": VoyageModel(1024, FLEXIBLE, 32_000, 320_000),
    "voyage-3.5-lite": VoyageModel(1024, FLEXIBLE, 32_000, 1_000_000),
    "voyage-code-3": VoyageModel(1024, FLEXIBLE, 32_000, 120_000),
    "voyage-finance-2": VoyageModel(1024, (), 32_000, 120_000),
    "voyage-law-2": VoyageModel(1024, (), 16_000, 120_000),
    "voyage-2": VoyageModel(1024, (), 4_000, 320_000),
}


@dataclass(frozen=True, kw_only=True)
class VoyageConfig:
    """Options of the fake Voyage upstream (``max_inputs`` is Voyage's published 1,000)."""

    models: Mapping[str, VoyageModel] = field(default_factory=lambda: dict(VOYAGE_MODELS))
    api_key: str | None = None
    max_inputs: int = 1000
    salt: str = ""
    log_size: int = 1000


def _bad(message: str) -> Rejected:
    return Rejected(json_response({"detail": message}, 400))


class VoyageUpstream(FakeUpstream):
    """The fake Voyage upstream app; pass a ``VoyageConfig`` or its fields."""

    bad_key_message = "Provided API key is invalid."

    def __init__(self, config: VoyageConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else VoyageConfig(**options)
        self.config = config
        super().__init__([("/v1/embeddings", self._embed)], api_key=config.api_key, log_size=config.log_size)

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return json_response({"detail": message}, status, headers)

    def _texts(self, raw: Any, model: VoyageModel, truncation: bool) -> tuple[list[str], int]:
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise _bad("input must be a non-empty string or a non-empty list of non-empty strings")
        if len(texts) > self.config.max_inputs:
            raise _bad(
                f"The batch size limit is {self.config.max_inputs}. Your batch size is {len(texts)}."
            )
        counts = [fake_token_count(t) for t in texts]
        for i, count in enumerate(counts):
            if count > model.context and not truncation:
                raise _bad(
                    f"Input {i} has {count} tokens, more than the context length {model.context}; "
                    "set truncation to true or shorten it."
                )
        total = sum(min(c, model.context) for c in counts)
        if total > model.request_tokens:
            raise _bad(
                f"Request to model has {total} tokens, more than the limit of {model.request_tokens} "
                "tokens per request; lower the number of tokens in the batch."
            )
        return texts, total

    async def _embed(self, body: Any, fault: Fault | None) -> Response:
        if isinstance(body, BadJSON) or not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        name = body.get("model")
        model = self.config.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise _bad(f"Model {name} is not supported. Supported models are {sorted(self.config.models)}.")
        input_type = body.get("input_type")
        if input_type not in (None, "query", "document"):
            raise _bad("input_type must be null, 'query' or 'document'")
        truncation = body.get("truncation", True)
        if not isinstance(truncation, bool):
            raise _bad("truncation must be a boolean")
        dims = body.get("output_dimension")
        if dims is not None and dims not in model.output_dimensions:
            allowed = ", ".join(map(str, model.output_dimensions)) or "none (fixed width)"
            raise _bad(f"output_dimension {dims} is not supported by {name}; supported: {allowed}")
        dtype = body.get("output_dtype") or "float"
        if dtype not in DTYPES or (dtype != "float" and not model.output_dimensions):
            raise _bad(f"output_dtype {dtype!r} is not supported by {name}")
        encoding = body.get("encoding_format")
        if encoding not in (None, "base64"):
            raise _bad("encoding_format must be null or 'base64'")
        texts, tokens = self._texts(body.get("input"), model, truncation)
        matrix = typed_matrix(texts, int(dims or model.dimensions), input_type, salt=self.config.salt)
        matrix, pairs = faulted_rows(matrix, fault)
        values = typed_rows(matrix, dtype, as_base64=encoding == "base64")
        data = [{"object": "embedding", "embedding": values[row], "index": index} for index, row in pairs]
        payload = {"object": "list", "data": data, "model": name, "usage": {"total_tokens": tokens}}
        return answer(payload, fault)


def main(argv: Sequence[str] | None = None) -> None:
    fake_main(VoyageUpstream, "python -m fakes.voyage_upstream", argv)


if __name__ == "__main__":
    main()
