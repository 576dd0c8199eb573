"""Provider for Cohere's Embed API v2 (``provider: cohere``).

API reference: https://docs.cohere.com/reference/embed (``POST /v2/embed``).

``base_url`` is the host root (default ``https://api.cohere.com``); requests go to
``{base_url}/v2/embed`` with ``Authorization: Bearer <api_key>``. Text only (Cohere takes
no token ids), at most **96 texts a call** (the gateway splits larger requests).

What it maps:

``input_type``
    ``query`` -> ``search_query``, ``document`` -> ``search_document``. Cohere requires
    an ``input_type`` for v3 and newer models, so when the request and the deployment
    give none, an ``input_type`` in ``extra_body`` (``classification``, ``clustering``)
    is sent as it is, else this provider's default ``search_document`` (or the
    deployment's ``cohere_input_type``).
``dimensions``
    ``output_dimension`` on models that take it (embed-v4.0: 256, 512, 1024, 1536). A
    size in between is served by asking for the next size up and keeping the leading
    dimensions, re-normalised (embed-v4.0 is a Matryoshka model).
encodings
    ``base64_binary`` asks for ``ubinary`` and re-packs its bits least significant bit
    first (``providers.upstream.typed``). Cohere's ``ubinary`` is most significant bit
    first with a set bit for a positive value: its own docs
    (https://docs.cohere.com/docs/embeddings, "Compression Levels") unpack it with
    ``np.unpackbits`` and map bits to ``2 * bit - 1``. ``base64_int8`` asks for floats: Cohere's
    ``int8`` is scaled by a calibrated range, not the gateway's per-vector maximum.
usage
    ``meta.billed_units.input_tokens``, as billed.

What it cannot do: token-id inputs, images, contextualized embeddings. ``extra_body`` keys
are forwarded (``truncate``, ``max_tokens``, ...), except the ones set here: ``model``,
``texts``, ``embedding_types`` and ``output_dimension``.

Errors (``{"message": ...}``) are translated by ``providers.upstream.errors``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import Capabilities, EmbedInput, EmbedOptions
from providers.catalog import KnownModel, models, widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings, choice
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.typed import byte_rows, cut, lsb_first, size_to_ask
from providers.upstream.wire import decode_rows, malformed

__all__ = ["CohereProvider", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://api.cohere.com"
MAX_TEXTS = 96
#: Widths, token caps and ``output_dimension`` sizes per model: ``providers.catalog``.
MODELS: Mapping[str, KnownModel] = models("cohere")
INPUT_TYPES = {"query": "search_query", "document": "search_document"}


class CohereProvider(UpstreamProvider):
    """Cohere ``/v2/embed``; see the module docstring."""

    provider = "cohere"
    display = "Cohere"
    default_base_url = DEFAULT_BASE_URL
    max_inputs = MAX_TEXTS
    max_input_tokens = 512
    max_request_tokens = MAX_TEXTS * 512
    native_encodings = frozenset({"float", "binary"})
    known_dimensions = widths("cohere")
    reserved = frozenset({"model", "texts", "embedding_types", "output_dimension"})
    settings = Settings(
        options={
            **COMMON_UPSTREAM_OPTIONS,
            "cohere_input_type": choice(
                "search_document", "search_query", "classification", "clustering",
                default="search_document",
                doc="the input_type sent when neither the request nor the deployment gives one",
            ),
        },
        model="required",
        model_message="the cohere provider needs a model, e.g. embed-v4.0",
        input_type=True,
    )

    def setup(self) -> None:
        self.facts = MODELS.get(self.model)
        self.sizes = self.facts.output_sizes if self.facts else ()

    def declare(self) -> Capabilities:
        capabilities = super().declare()
        if self.facts is None:
            return capabilities
        facts = self.facts
        return dataclasses.replace(
            capabilities, max_input_tokens=facts.max_input_tokens,
            max_request_tokens=facts.max_request_tokens or self.max_request_tokens,
        )

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        return (min(self.sizes), max(self.sizes)) if self.sizes else None

    def path(self, options: EmbedOptions) -> str:
        return "/v2/embed"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["model"] = self.model
        body["texts"] = inputs if isinstance(inputs, list) else list(inputs)
        if options.input_type is not None:
            body["input_type"] = INPUT_TYPES[options.input_type]
        elif "input_type" not in body:
            body["input_type"] = self.option("cohere_input_type")
        body["embedding_types"] = ["ubinary" if options.encoding == "binary" else "float"]
        size = size_to_ask(options.dimensions, self.sizes)
        if size is not None:
            body["output_dimension"] = size
        return body

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        binary = options.encoding == "binary"
        embeddings = payload.get("embeddings")
        kind = "ubinary" if binary else "float"
        rows = embeddings.get(kind) if isinstance(embeddings, dict) else None
        if not isinstance(rows, list):
            raise malformed(self.where, f"embeddings.{kind} is missing or not a list")
        if len(rows) != len(inputs):
            raise malformed(self.where, f"embeddings.{kind} holds {len(rows)} items, expected {len(inputs)}")
        dimensions = options.dimensions or self.width
        size = size_to_ask(options.dimensions, self.sizes) or dimensions
        if binary:
            if not dimensions:
                raise malformed(self.where, "binary vectors were asked for before the width was known")
            packed = byte_rows(rows, -(-size // 8), where=self.where)
            vectors = cut(lsb_first(packed), dimensions, binary=True)
            return Answer(vectors=vectors, encoding="binary", dimensions=dimensions, prompt_tokens=_billed(payload))
        floats = decode_rows(rows, "float", width=size or None, where=self.where)
        if options.dimensions is not None:
            floats = cut(floats, options.dimensions, binary=False)
        return Answer(vectors=floats, prompt_tokens=_billed(payload))


def _billed(payload: Mapping[str, Any]) -> int | None:
    meta = payload.get("meta")
    units = meta.get("billed_units") if isinstance(meta, dict) else None
    tokens = units.get("input_tokens") if isinstance(units, dict) else None
    if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) and tokens >= 0:
        return int(tokens)
    return None
