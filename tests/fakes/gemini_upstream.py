"""A fake Gemini API ``POST /v1beta/models/{model}:batchEmbedContents`` upstream
(https://ai.google.dev/api/embeddings#method:-models.batchembedcontents).

Auth: the ``x-goog-api-key`` header (or ``?key=``). Missing: 403 ``PERMISSION_DENIED``;
wrong: 400 ``INVALID_ARGUMENT`` with an ``ErrorInfo`` of reason ``API_KEY_INVALID``
(Google answers a bad key with 400, not 401).
Request: ``{"requests": [{"model": "models/<model>", "content": {"parts": [{"text"}]},
"taskType", "title", "outputDimensionality"}]}``, at most 100 requests, each naming the
model of the URL. Answer: ``{"embeddings": [{"values": [...]}]}`` in request order, with
no usage. Errors: ``{"error": {"code", "message", "status", "details"?}}``; a 429
carries a ``google.rpc.RetryInfo`` detail whose ``retryDelay`` is the injected fault's
``retry_after`` (Google sends no ``Retry-After`` header).

Vectors: ``typed_matrix(texts, native, taskType, salt=config.salt)`` (a request with no
``taskType`` uses the plain salt). As gemini-embedding-001 does, only the full-width
vector is normalised: ``outputDimensionality`` cuts it without re-normalising.

Run standalone: ``python -m fakes.gemini_upstream --port 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from .base import BadJSON, FakeUpstream, Rejected, current_request, json_response
from .faults import MODES, Fault
from .server import fake_main
from .typed_outputs import answer, faulted_rows
from .vectors import typed_matrix

__all__ = ["GEMINI_MODELS", "GeminiConfig", "GeminiUpstream", "TASK_TYPES", "main"]

TASK_TYPES = (
    "TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
    "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
)
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class GeminiModel:
    """A served model: width, and whether it takes ``taskType``/``outputDimensionality``."""

    dimensions: int
    flexible: bool = True


GEMINI_MODELS: Mapping[str, GeminiModel] = {
    "gemini-embedding-001": GeminiModel(3072),
    "text-embedding-004": GeminiModel(768),
    "embedding-001": GeminiModel(768, flexible=False),
}


@dataclass(frozen=True, kw_only=True)
class GeminiConfig:
    """Options of the fake Gemini upstream (``max_requests`` is the published 100)."""

    models: Mapping[str, GeminiModel] = field(default_factory=lambda: dict(GEMINI_MODELS))
    api_key: str | None = None
    max_requests: int = 100
    salt: str = ""
    log_size: int = 1000


def google_error(status: int, message: str, *, details: list[Any] | None = None,
                 headers: dict[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return json_response({"error": error}, status, headers)


def _bad(message: str) -> Rejected:
    return Rejected(google_error(400, message))


class GeminiUpstream(FakeUpstream):
    """The fake Gemini upstream app; pass a ``GeminiConfig`` or its fields."""

    def __init__(self, config: GeminiConfig | None = None, **options: Any) -> None:
        config = replace(config, **options) if config else GeminiConfig(**options)
        self.config = config
        super().__init__(
            [("/v1beta/models/{call}", self._call)],
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
        details = None
        if status == 429 and headers and "retry-after" in headers:
            delay = headers.pop("retry-after")
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}]
        return google_error(status, message, details=details, headers=headers)

    def auth_error(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            return google_error(403, "Method doesn't allow unregistered callers (callers without "
                                     "established identity). Please use API Key or other form of API consumer identity to call this API.")
        if key != self.api_key:
            info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com"}
            return google_error(400, "API key not valid. Please pass a valid API key.", details=[info])
        return None

    def _texts(self, requests: Any, name: str, model: GeminiModel) -> tuple[list[str], str | None, int]:
        if not isinstance(requests, list) or not requests:
            raise _bad("* BatchEmbedContentsRequest.requests: requests must not be empty")
        if len(requests) > self.config.max_requests:
            raise _bad(f"* BatchEmbedContentsRequest.requests: at most {self.config.max_requests} "
                       "requests can be in one batch")
        texts: list[str] = []
        tasks: set[str | None] = set()
        sizes: set[int | None] = set()
        for i, entry in enumerate(requests):
            where = f"* BatchEmbedContentsRequest.requests[{i}]"
            if not isinstance(entry, dict) or entry.get("model") != f"models/{name}":
                raise _bad(f"{where}.model: unexpected model name format, or not the model of the "
                           f"URL (models/{name})")
            parts = (entry.get("content") or {}).get("parts")
            if not isinstance(parts, list) or not parts or not all(
                isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
            ):
                raise _bad(f"{where}.content: contents.parts must not be empty and hold text")
            texts.append("".join(p["text"] for p in parts))
            task = entry.get("taskType")
            if task is not None and (task not in TASK_TYPES or not model.flexible):
                raise _bad(f"{where}.task_type: invalid value {task!r} for this model")
            if entry.get("title") is not None and task != "RETRIEVAL_DOCUMENT":
                raise _bad(f"{where}.title: only valid with taskType RETRIEVAL_DOCUMENT")
            size = entry.get("outputDimensionality")
            if size is not None and (not model.flexible or not isinstance(size, int) or not 1 <= size <= model.dimensions):
                raise _bad(f"{where}.output_dimensionality: must be between 1 and {model.dimensions}")
            tasks.add(None if task == "TASK_TYPE_UNSPECIFIED" else task)
            sizes.add(size)
        if len(tasks) > 1 or len(sizes) > 1:
            # Real Gemini would take mixed requests; the fake keeps one task and size per call.
            raise _bad("the fake takes one taskType and one outputDimensionality per batch")
        size = sizes.pop()
        return texts, tasks.pop(), int(size or model.dimensions)

    async def _call(self, body: Any, fault: Fault | None) -> Response:
        call: str = current_request.get().path_params["call"]
        name, _, method = call.partition(":")
        model = self.config.models.get(name)
        if method != "batchEmbedContents":
            return google_error(404, f"Method {method or '(none)'} of models/{name} is not found.")
        if model is None:
            return google_error(404, f"models/{name} is not found for API version v1beta, or is not "
                                     "supported for embedContent.")
        if isinstance(body, BadJSON) or not isinstance(body, dict):
            raise _bad("Invalid JSON payload received.")
        texts, task, size = self._texts(body.get("requests"), name, model)
        matrix = np.ascontiguousarray(typed_matrix(texts, model.dimensions, task, salt=self.config.salt)[:, :size])
        matrix, pairs = faulted_rows(matrix, fault)
        return answer({"embeddings": [{"values": matrix[row]} for _, row in pairs]}, fault)


def main(argv: Sequence[str] | None = None) -> None:
    fake_main(GeminiUpstream, "python -m fakes.gemini_upstream", argv)


if __name__ == "__main__":
    main()
