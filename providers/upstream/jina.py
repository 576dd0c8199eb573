"""Provider for Jina AI's embeddings API (``provider: jina``).

API reference: https://jina.ai/embeddings/ (schema: https://api.jina.ai/openapi.json,
``POST /v1/embeddings``).

``base_url`` carries the version prefix (default ``https://api.jina.ai/v1``); requests go
to ``{base_url}/embeddings`` with ``Authorization: Bearer <api_key>``. Text only, at most
2,048 texts a call (the gateway splits larger requests); texts up to the model's context
(jina-embeddings-v3: 8,192 tokens; v4: 32,768). Jina publishes no per-call token cap; the
gateway keeps calls under 300,000 tokens. ``normalized: true`` is always sent, so vectors
come back unit length like every other backend's.

What it maps:

``input_type``
    ``query`` -> ``task: retrieval.query``, ``document`` -> ``retrieval.passage`` on
    models with task adapters (v3, v4). When neither the request nor the deployment gives
    one, no ``task`` is sent (Jina's default: the model without a task adapter); a ``task``
    in ``extra_body`` (``text-matching``, ``classification``, ...) is sent as it is.
``dimensions``
    ``dimensions`` (Matryoshka): v3 32..1024, v4 128..2048.
encodings
    ``base64_binary`` asks for ``embedding_type: ubinary`` (JSON integers: Jina's
    ``embedding_type`` takes one type, and ``base64`` is the float one) and re-packs its
    bits least significant bit first (``providers.upstream.typed``). Jina publishes no
    packing example; clients (LlamaIndex's Jina integration) unpack its ``ubinary`` with
    ``np.unpackbits``, most significant bit first, as Voyage and Cohere pack theirs. Floats are asked for
    as ``embedding_type: base64``: each embedding is a base64 string of the float32 values,
    little-endian (clients read it with ``np.frombuffer(..., dtype=np.float32)``, e.g.
    tensorchord/vechord's Jina client), smaller and far faster to read than JSON numbers.
    The deployment option ``encoding: float`` asks for JSON numbers instead; answers in
    either form are read whichever was asked. ``base64_int8`` is the gateway's
    quantisation of the floats (Jina has no int8).
usage
    ``usage.prompt_tokens``.

What it cannot do: token ids, images, late chunking as contextualized embeddings.
``extra_body`` keys are forwarded (``truncate``, ``late_chunking``), except ``model``,
``input``, ``dimensions``, ``embedding_type`` and ``normalized``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import Capabilities, EmbedInput, EmbedOptions
from providers.catalog import KnownModel, models, widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings, choice
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.typed import lsb_first, packed_rows
from providers.upstream.wire import decode_rows, ordered_items, read_usage

__all__ = ["DEFAULT_BASE_URL", "JinaProvider"]

DEFAULT_BASE_URL = "https://api.jina.ai/v1"
TASKS = {"query": "retrieval.query", "document": "retrieval.passage"}
#: Widths, ``dimensions`` ranges (None: fixed), task adapters and context per model:
#: ``providers.catalog``.
MODELS: Mapping[str, KnownModel] = models("jina")


class JinaProvider(UpstreamProvider):
    """Jina ``/v1/embeddings``; see the module docstring."""

    provider = "jina"
    display = "Jina"
    default_base_url = DEFAULT_BASE_URL
    max_inputs = 2048
    max_input_tokens = 8192
    max_request_tokens = 300_000
    native_encodings = frozenset({"float", "binary"})
    known_dimensions = widths("jina")
    reserved = frozenset({"model", "input", "dimensions", "embedding_type", "normalized"})
    settings = Settings(
        options={**COMMON_UPSTREAM_OPTIONS, "encoding": choice(
            "base64", "float", default="base64",
            doc="base64: embedding_type base64 (default); float: JSON numbers")},
        model="required",
        model_message="the jina provider needs a model, e.g. jina-embeddings-v3",
        input_type=True,
    )

    def setup(self) -> None:
        self.facts = MODELS.get(self.model)
        self.float_type: str = self.option("encoding")

    def declare(self) -> Capabilities:
        capabilities = super().declare()
        if self.facts is None:
            return capabilities
        return dataclasses.replace(capabilities, max_input_tokens=self.facts.max_input_tokens,
                                   input_type=self.facts.task_types)

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        return self.facts.native_dimensions if self.facts else None

    def path(self, options: EmbedOptions) -> str:
        return "/embeddings"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["model"] = self.model
        body["input"] = inputs if isinstance(inputs, list) else list(inputs)
        if options.input_type is not None and (self.facts is None or self.facts.task_types):
            body["task"] = TASKS[options.input_type]
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        body["embedding_type"] = "ubinary" if options.encoding == "binary" else self.float_type
        body["normalized"] = True
        return body

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        items = ordered_items(payload.get("data"), len(inputs), where=self.where)
        values = [item.get("embedding") for item in items]
        usage = read_usage(payload)
        if options.encoding == "binary":
            dimensions = options.dimensions or self.width
            packed = packed_rows(values, -(-dimensions // 8), where=self.where)
            return Answer(vectors=lsb_first(packed), encoding="binary", dimensions=dimensions,
                          prompt_tokens=usage.prompt_tokens)
        vectors = decode_rows(values, "float", width=self.expected_width(options), where=self.where)
        return Answer(vectors=vectors, prompt_tokens=usage.prompt_tokens)

