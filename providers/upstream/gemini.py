"""Provider for the Gemini API's embeddings (``provider: gemini``).

API reference: https://ai.google.dev/api/embeddings#method:-models.batchembedcontents
(``POST /v1beta/models/{model}:batchEmbedContents``).

``base_url`` is the host root (default ``https://generativelanguage.googleapis.com``);
``model`` is written bare (``gemini-embedding-001``). The key travels in the
``x-goog-api-key`` header. One call embeds at most **100 requests** (one text each); the
gateway splits larger requests. Each text is cut by Gemini at the model's 2,048 tokens.

What it maps:

``input_type``
    ``query`` -> ``taskType: RETRIEVAL_QUERY``, ``document`` -> ``RETRIEVAL_DOCUMENT``.
    When neither the request nor the deployment gives one, no ``taskType`` is sent
    (Gemini's ``TASK_TYPE_UNSPECIFIED``); a ``taskType`` in ``extra_body``
    (``SEMANTIC_SIMILARITY``, ``CLUSTERING``, ...) is sent as it is.
``dimensions``
    ``outputDimensionality`` (gemini-embedding-001: 128..3072, as ``providers.catalog``
    lists it; text-embedding-004: 1..768).
    Gemini normalises only the full-width vector, so a smaller one is re-normalised here.
encodings
    Gemini answers floats only: the gateway makes ``base64``, ``base64_int8`` and
    ``base64_binary`` from them.
usage
    Gemini reports none: tokens are estimated (``x-gateway-usage-estimated: true``).
``extra_body``
    Its keys go into every request of the batch (``title``, ``taskType``), except
    ``model``, ``content`` and ``outputDimensionality``, set here.

What it cannot do: token ids, images, contextualized embeddings, exact token counts.
Errors come in Google's shape, ``{"error": {"code", "message", "status", "details"}}``;
``providers.upstream.errors`` reads its ``API_KEY_INVALID`` (a 400) as refused credentials
and its ``RetryInfo`` as the 429's retry delay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import Capabilities, EmbedInput, EmbedOptions
from providers.catalog import KnownModel, models, widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.typed import normalised
from providers.upstream.wire import decode_rows, malformed

__all__ = ["DEFAULT_BASE_URL", "GeminiProvider"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
MAX_REQUESTS = 100
MAX_INPUT_TOKENS = 2048
TASK_TYPES = {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"}
#: Widths, ``outputDimensionality`` ranges and whether a model takes ``taskType`` (the old
#: embedding-001 takes neither): ``providers.catalog``.
MODELS: Mapping[str, KnownModel] = models("gemini")


class GeminiProvider(UpstreamProvider):
    """Gemini ``batchEmbedContents``; see the module docstring."""

    provider = "gemini"
    display = "Gemini"
    default_base_url = DEFAULT_BASE_URL
    auth = "x-goog-api-key"
    max_inputs = MAX_REQUESTS
    max_input_tokens = MAX_INPUT_TOKENS
    max_request_tokens = MAX_REQUESTS * MAX_INPUT_TOKENS
    known_dimensions = widths("gemini")
    reserved = frozenset({"model", "content", "outputDimensionality"})
    settings = Settings(
        options=dict(COMMON_UPSTREAM_OPTIONS),
        model="required",
        model_message="the gemini provider needs a model, e.g. gemini-embedding-001",
        input_type=True,
    )

    def setup(self) -> None:
        self.facts = MODELS.get(self.model)
        self.tasks = self.facts.task_types if self.facts else True
        self._path = f"/v1beta/models/{self.model}:batchEmbedContents"
        self._resource = f"models/{self.model}"

    def declare(self) -> Capabilities:
        capabilities = dataclasses.replace(super().declare(), input_type=self.tasks)
        if self.facts is None:
            return capabilities
        return dataclasses.replace(capabilities, max_input_tokens=self.facts.max_input_tokens)

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        if self.facts is not None:
            return self.facts.native_dimensions
        # A model this gateway does not know: any size up to its width, once known.
        return (1, width) if width else None

    def path(self, options: EmbedOptions) -> str:
        return self._path

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        common = self.base_body(options)
        if options.input_type is not None and self.tasks:
            common["taskType"] = TASK_TYPES[options.input_type]
        if options.dimensions is not None:
            common["outputDimensionality"] = options.dimensions
        resource = self._resource
        return {
            "requests": [
                {"model": resource, "content": {"parts": [{"text": text}]}, **common} for text in inputs
            ]
        }

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        embeddings = payload.get("embeddings")
        if not isinstance(embeddings, list):
            raise malformed(self.where, "embeddings is missing or not a list")
        if len(embeddings) != len(inputs):
            raise malformed(self.where, f"embeddings holds {len(embeddings)} items, expected {len(inputs)}")
        values = [e.get("values") if isinstance(e, dict) else None for e in embeddings]
        width = options.dimensions or self.learned or self.declared
        vectors = decode_rows(values, "float", width=width, where=self.where)
        # Gemini normalises only the full-width vector; a cut one is re-normalised here.
        return Answer(vectors=vectors if options.dimensions is None else normalised(vectors))
