"""A fake Ollama server: ``POST /api/embed`` (Ollama API docs, "Generate Embeddings").

Body ``{"model", "input": str | [str], "truncate": bool, "dimensions": int, "keep_alive",
"options"}``; answer ``{"model", "embeddings", "total_duration", "load_duration",
"prompt_eval_count"}``. No key. Errors are ``{"error": "..."}``: 404 for a model not
pulled, 400 for a bad body, an input past ``context_length`` with ``truncate: false``,
or ``dimensions`` out of range. Vectors are ``fake_matrix(texts, width)``, cut and
re-normalised to ``dimensions`` (the fake's rows are Matryoshka by construction).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from .base import BadJSON, FakeUpstream, JSONBytes, Rejected, json_response
from .faults import Fault
from .vectors import fake_matrix, fake_token_count

__all__ = ["OllamaUpstream"]


def ollama_error(status: int, message: str) -> Rejected:
    return Rejected(json_response({"error": message}, status))


class OllamaUpstream(FakeUpstream):
    """``models``: name -> width of the models "pulled" on this server."""

    def __init__(
        self, *, models: Mapping[str, int] | None = None, context_length: int = 2048, send_count: bool = True
    ) -> None:
        super().__init__([("/api/embed", self._embed)])
        self.models = dict(models or {"nomic-embed-text": 768})
        self.context_length = context_length
        self.send_count = send_count

    async def _embed(self, body: Any, fault: Fault | None) -> Response:
        if isinstance(body, BadJSON) or not isinstance(body, dict):
            raise ollama_error(400, "invalid request body")
        model = body.get("model")
        if model not in self.models:
            raise ollama_error(404, f'model "{model}" not found, try pulling it first')
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ollama_error(400, "invalid input type")
        width = self.models[model]
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= width):
            raise ollama_error(400, f"dimensions must be between 1 and {width}")
        counts = [fake_token_count(t) for t in texts]
        if body.get("truncate", True) is False and max(counts) > self.context_length:
            raise ollama_error(400, "the input length exceeds the context length")
        matrix = fake_matrix(texts, dims or width)
        if fault is not None and fault.mode == "wrong_dims":
            matrix = matrix[:, :-1]
        payload: dict[str, Any] = {
            "model": model,
            "embeddings": matrix,
            "total_duration": 14143917,
            "load_duration": 1019500,
        }
        if self.send_count:
            payload["prompt_eval_count"] = sum(min(c, self.context_length) for c in counts)
        return JSONBytes(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))
