"""A fake Jina AI ``POST /v1/embeddings`` upstream (https://jina.ai/embeddings/, API
schema at https://api.jina.ai/openapi.json).

Request: ``model``, ``input`` (a list of at most 2,048 strings or ``{"text": ...}``
objects), ``task`` (per model, e.g. ``retrieval.query``, ``retrieval.passage``,
``text-matching``), ``dimensions`` (Matryoshka, within the model's range),
``embedding_type`` (``float``, ``base64``, ``binary``, ``ubinary``), ``normalized``
(default false: vectors come back unnormalised), ``truncate`` (default false: an over-long
text is an error), ``late_chunking``.
Answer: ``{"model", "object": "list", "usage": {"total_tokens", "prompt_tokens"},
"data": [{"object": "embedding", "index", "embedding"}]}``. Errors: ``{"detail": ...}``
(a message, or FastAPI's list for a malformed body with 422), 401 for a bad key.

Vectors: ``typed_matrix(texts, dims, task, salt=config.salt)``, multiplied by
``UNNORMALISED_SCALE`` unless ``normalized`` is true.

Run standalone: ``python -m fakes.jina_upstream --port 0``.
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

__all__ = ["JINA_MODELS", "JinaConfig", "JinaModel", "JinaUpstream", "UNNORMALISED_SCALE", "main"]

UNNORMALISED_SCALE = 3.5
TYPES = ("float", "base64", "binary", "ubinary")
_V3_TASKS = ("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching")
_V4_TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage")


@dataclass(frozen=True)
class JinaModel:
    """A served model: width, smallest ``dimensions``, tasks, context in tokens."""

    dimensions: int
    min_dimensions: int | None
    tasks: tuple[str, ...]
    context: int


JINA_MODELS: Mapping[str, JinaModel] = {
    "jina-embeddings-v3": JinaModel(1024, 32, _V3_TASKS, 8192),
    "jina-embeddings-v4": JinaModel(2048, 128, _V4_TASKS, 32_768),
    "jina-embeddings-v2-base-en": JinaModel(768, None, (), 8192),
}


@dataclass(frozen=True, kw_only=True)
class JinaConfig:
    """Options of the fake Jina upstream."""

    models: Mapping[str, JinaModel] = field(default_factory=lambda: dict(JINA_MODELS))
    api_key: str | None = None
    max_inputs: int = 2048
    salt: str = ""
    log_size: int = 1000


def _bad(message: str, status: int = 400) -> Rejected:
    return Rejected(json_response({"detail": message}, status))


class JinaUpstream(FakeUpstream):
    """The fake Jina upstream app; pass a ``JinaConfig`` or its fields."""

    bad_key_message = "Unauthorized: invalid API key"

    def __init__(self, config: JinaConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else JinaConfig(**options)
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

    def _texts(self, raw: Any, model: JinaModel, truncate: bool) -> tuple[list[str], int]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise Rejected(json_response({"detail": [{"type": "missing", "loc": ["body", "input"],
                                                       "msg": "Field required"}]}, 422))
        texts = [i.get("text") if isinstance(i, dict) else i for i in items]
        if not all(isinstance(t, str) and t for t in texts):
            raise _bad("every input must be a non-empty string or {\"text\": <string>}")
        if len(texts) > self.config.max_inputs:
            raise _bad(f"Input has {len(texts)} items, more than the maximum of {self.config.max_inputs}")
        counts = [fake_token_count(t) for t in texts]
        for i, count in enumerate(counts):
            if count > model.context and not truncate:
                raise _bad(f"Input {i} has {count} tokens, more than {model.context}; "
                           "set truncate to true to cut it")
        return texts, sum(min(c, model.context) for c in counts)

    async def _embed(self, body: Any, fault: Fault | None) -> Response:
        if isinstance(body, BadJSON) or not isinstance(body, dict):
            raise _bad("the body must be a JSON object", 422)
        name = body.get("model")
        model = self.config.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise _bad(f"Model '{name}' not found")
        task = body.get("task")
        if task is not None and task not in model.tasks:
            raise _bad(f"Invalid task {task!r} for {name}; valid: {', '.join(model.tasks) or 'none'}")
        dims = body.get("dimensions")
        if dims is not None:
            low = model.min_dimensions
            if low is None or not isinstance(dims, int) or not low <= dims <= model.dimensions:
                raise _bad(f"dimensions must be between {low} and {model.dimensions} for {name}"
                           if low else f"{name} does not take dimensions")
        kind = body.get("embedding_type") or "float"
        if kind not in TYPES:
            raise _bad(f"embedding_type must be one of {', '.join(TYPES)}")
        texts, tokens = self._texts(body.get("input"), model, bool(body.get("truncate", False)))
        matrix = typed_matrix(texts, int(dims or model.dimensions), task, salt=self.config.salt)
        if not body.get("normalized", False):
            matrix = matrix * UNNORMALISED_SCALE
        matrix, pairs = faulted_rows(matrix, fault)
        values = typed_rows(matrix, kind)
        data = [{"object": "embedding", "index": index, "embedding": values[row]} for index, row in pairs]
        usage = {"total_tokens": tokens, "prompt_tokens": tokens}
        return answer({"model": name, "object": "list", "usage": usage, "data": data}, fault)


def main(argv: Sequence[str] | None = None) -> None:
    fake_main(JinaUpstream, "python -m fakes.jina_upstream", argv)


if __name__ == "__main__":
    main()
