"""A fake Cohere ``POST /v2/embed`` upstream (https://docs.cohere.com/reference/embed).

Request: ``model``, ``texts`` (at most 96), ``input_type`` (``search_document``,
``search_query``, ``classification``, ``clustering``; required for v3 and newer models),
``embedding_types`` (``float``, ``int8``, ``uint8``, ``binary``, ``ubinary``, ``base64``;
default ``["float"]``), ``output_dimension`` (embed-v4.0 only: 256, 512, 1024, 1536),
``truncate`` (``NONE``, ``START``, ``END``; default ``END``), ``max_tokens``.
Answer: ``{"id", "embeddings": {<type>: [...]}, "texts", "meta": {"api_version",
"billed_units": {"input_tokens"}}, "response_type": "embeddings_by_type"}``.
Errors: ``{"message": ...}`` with 400 (invalid request), 401 (bad key), 404 (unknown
model), 429, 500.

Vectors: ``typed_matrix(texts, dims, input_type, salt=config.salt)`` (so a query and a
document embedding differ), in the types of ``typed_outputs``. Tokens: ``fake_token_count``,
capped at the model's context when truncated. No answer item carries an index, so the
``bad_index`` and ``reorder`` faults do not apply.

Run standalone: ``python -m fakes.cohere_upstream --port 0``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.responses import Response

from .base import BadJSON, FakeUpstream, Rejected, json_response
from .faults import MODES, Fault
from .server import fake_main
from .typed_outputs import TYPES, answer, faulted_rows, typed_rows
from .vectors import fake_token_count, typed_matrix

__all__ = ["COHERE_MODELS", "CohereConfig", "CohereModel", "CohereUpstream", "main"]

INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
TRUNCATES = ("NONE", "START", "END")


@dataclass(frozen=True)
class CohereModel:
    """A served model: native width, the ``output_dimension`` values it takes (empty:
    none), and its context in tokens."""

    dimensions: int
    output_dimensions: tuple[int, ...] = ()
    context: int = 512


COHERE_MODELS: Mapping[str, CohereModel] = {
    "embed-v4.0": CohereModel(1536, (256, 512, 1024, 1536), 128_000),
    "embed-english-v3.0": CohereModel(1024),
    "embed-multilingual-v3.0": CohereModel(1024),
    "embed-english-light-v3.0": CohereModel(384),
    "embed-multilingual-light-v3.0": CohereModel(384),
}


@dataclass(frozen=True, kw_only=True)
class CohereConfig:
    """Options of the fake Cohere upstream (``max_texts`` is Cohere's published 96)."""

    models: Mapping[str, CohereModel] = field(default_factory=lambda: dict(COHERE_MODELS))
    api_key: str | None = None
    max_texts: int = 96
    salt: str = ""
    log_size: int = 1000


def _invalid(message: str) -> Rejected:
    return Rejected(json_response({"message": f"invalid request: {message}"}, 400))


class CohereUpstream(FakeUpstream):
    """The fake Cohere upstream app; pass a ``CohereConfig`` or its fields."""

    bad_key_message = "invalid api token"

    def __init__(self, config: CohereConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else CohereConfig(**options)
        self.config = config
        super().__init__(
            [("/v2/embed", self._embed)],
            api_key=config.api_key,
            log_size=config.log_size,
            fault_modes=[m for m in MODES if m not in ("bad_index", "reorder")],
        )

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return json_response({"message": message}, status, headers)

    def _validate(self, body: Any) -> tuple[str, CohereModel, list[str], str | None, list[str], int]:
        if isinstance(body, BadJSON):
            raise _invalid(f"body is not valid JSON: {body.error}")
        if not isinstance(body, dict):
            raise _invalid("body must be a JSON object")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise _invalid("model must be specified")
        model = self.config.models.get(name)
        if model is None:
            message = f"model '{name}' not found, make sure the correct model ID was used"
            raise Rejected(json_response({"message": message}, 404))
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _invalid("texts must be a non-empty list of strings")
        if len(texts) > self.config.max_texts:
            raise _invalid(
                f"total number of texts must be at most {self.config.max_texts} - received {len(texts)}"
            )
        input_type = body.get("input_type")
        if input_type is None:
            raise _invalid("valid input_type must be provided with the provided model")
        if input_type not in INPUT_TYPES:
            raise _invalid(f"input_type must be one of {', '.join(INPUT_TYPES)}, not {input_type!r}")
        kinds = body.get("embedding_types") or ["float"]
        if not isinstance(kinds, list) or any(k not in TYPES for k in kinds):
            raise _invalid(f"embedding_types must be a list of {', '.join(TYPES)}")
        dims = body.get("output_dimension")
        if dims is not None:
            if not model.output_dimensions:
                raise _invalid(f"output_dimension is not supported for model {name}")
            if dims not in model.output_dimensions:
                allowed = ", ".join(map(str, model.output_dimensions))
                raise _invalid(f"output_dimension must be one of {allowed}")
        truncate = body.get("truncate", "END")
        if truncate not in TRUNCATES:
            raise _invalid(f"truncate must be one of {', '.join(TRUNCATES)}")
        return name, model, texts, input_type, list(dict.fromkeys(kinds)), int(dims or model.dimensions)

    async def _embed(self, body: Any, fault: Fault | None) -> Response:
        name, model, texts, input_type, kinds, dims = self._validate(body)
        counts = [fake_token_count(t) for t in texts]
        if body.get("truncate", "END") == "NONE":
            for i, count in enumerate(counts):
                if count > model.context:
                    raise _invalid(
                        f"text {i} is too long: {count} tokens, the model takes {model.context}"
                    )
        matrix, pairs = faulted_rows(typed_matrix(texts, dims, input_type, salt=self.config.salt), fault)
        rows = [row for _, row in pairs]
        embeddings = {}
        for kind in kinds:
            values = typed_rows(matrix, kind)
            embeddings[kind] = [values[r] for r in rows]
        billed = sum(min(c, model.context) for c in counts)
        payload = {
            "id": str(uuid.uuid4()),
            "embeddings": embeddings,
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": billed}},
            "response_type": "embeddings_by_type",
        }
        return answer(payload, fault)


def main(argv: Sequence[str] | None = None) -> None:
    fake_main(CohereUpstream, "python -m fakes.cohere_upstream", argv)


if __name__ == "__main__":
    main()
