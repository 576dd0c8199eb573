"""Provider for Ollama's native embeddings API (``provider: ollama``).

API reference: Ollama API, "Generate Embeddings", ``POST /api/embed``
(https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings): body
``{"model", "input": str | [str], "truncate": bool, "dimensions": int, "keep_alive": str |
number, "options": {...}}``; answer ``{"model", "embeddings": [[float]], "total_duration",
"load_duration", "prompt_eval_count"}`` with the vectors in input order and the tokens
evaluated in ``prompt_eval_count`` (read as usage; estimated, and said to be, when
absent). Errors are ``{"error": "..."}``: 400 (bad request, input too long with
``truncate: false``), 404 (model not pulled), 500.

``base_url`` defaults to ``http://127.0.0.1:11434``; Ollama takes no key (``api_key`` is
sent as ``Authorization: Bearer`` only when set, for a proxy in front of it).

Options (all optional):

``truncate``
    Let Ollama cut inputs past the model's context. Default true (Ollama's default).
``keep_alive``
    How long the model stays loaded after a call (``"5m"``, ``"1h"``, seconds as a number,
    ``-1`` for ever). Default: Ollama's own (5 minutes).
``native_dimensions``
    The model is Matryoshka-trained and Ollama may shorten it (the ``dimensions``
    parameter, 1 up to its width). Default false: the gateway truncates where the alias
    allows it.
``max_inputs_per_call`` / ``context_length``
    Inputs a call (default 512) and tokens an input (default 8192, nomic-embed-text's
    context; Ollama truncates past the model's own when ``truncate`` is on).

Ollama embeds text only, returns floats only, and has no notion of ``input_type``:
models that want a task prefix (nomic ``search_query: ``) need it in the text, or a local
``onnx`` deployment with ``query_prefix`` / ``document_prefix``.
"""

from __future__ import annotations

from typing import Any, Sequence

from providers.base import EmbedInput, EmbedOptions
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings, flag, scalar, whole
from providers.upstream.base import OPEN_DIMENSIONS_MAX, Answer, UpstreamProvider
from providers.upstream.wire import decode_rows, malformed

__all__ = ["DEFAULT_BASE_URL", "OllamaProvider"]

DEFAULT_BASE_URL = "http://127.0.0.1:11434"


class OllamaProvider(UpstreamProvider):
    """An Ollama server's ``/api/embed``."""

    provider = "ollama"
    display = "Ollama"
    default_base_url = DEFAULT_BASE_URL
    auth = "bearer"
    reserved = frozenset({"model", "input", "dimensions", "truncate"})
    settings = Settings(
        options={
            **COMMON_UPSTREAM_OPTIONS,
            "truncate": flag(True),
            "keep_alive": scalar(doc="how long the model stays loaded (\"5m\", seconds, -1)"),
            "native_dimensions": flag(False),
            "max_inputs_per_call": whole(512),
            "context_length": whole(8192),
        },
        model="required",
        model_message="is required: the Ollama model, like nomic-embed-text",
    )

    def setup(self) -> None:
        self.max_inputs = self.option("max_inputs_per_call")
        self.max_input_tokens = self.option("context_length")
        self.max_request_tokens = self.max_inputs * self.max_input_tokens

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        return (1, width or OPEN_DIMENSIONS_MAX) if self.option("native_dimensions") else None

    def path(self, options: EmbedOptions) -> str:
        return "/api/embed"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["model"] = self.model
        body["input"] = list(inputs)
        body["truncate"] = bool(self.option("truncate"))
        keep_alive = self.option("keep_alive")
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        return body

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        rows = payload.get("embeddings")
        if not isinstance(rows, list):
            raise malformed(self.where, "embeddings is missing or not a list")
        if len(rows) != len(inputs):
            raise malformed(self.where, f"embeddings holds {len(rows)} items, expected {len(inputs)}")
        vectors = decode_rows(rows, "float", width=self.expected_width(options), where=self.where)
        count = payload.get("prompt_eval_count")
        tokens = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
        return Answer(vectors=vectors, prompt_tokens=tokens)
