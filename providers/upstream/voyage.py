"""Provider for Voyage AI's text embeddings (``provider: voyage``).

API reference: https://docs.voyageai.com/reference/embeddings-api (``POST /v1/embeddings``).

``base_url`` carries the version prefix, as Voyage's SDK writes it (default
``https://api.voyageai.com/v1``); requests go to ``{base_url}/embeddings`` with
``Authorization: Bearer <api_key>``. Text only, at most **1,000 texts a call** and, per
call, at most the model's token cap (1M for voyage-4-lite / voyage-3.5-lite; 320K for
voyage-4, voyage-3.5, voyage-2; 120K for voyage-4-large, voyage-3-large, voyage-code-3,
voyage-finance-2, voyage-law-2); the gateway splits larger requests.

Vectors are asked for as base64 (``encoding_format: base64``): the reference says the
string is "a Base64-encoded NumPy array" of ``numpy.float32`` for ``output_dtype: float``
and of ``numpy.uint8`` for ``ubinary`` (``numpy.int8`` for ``int8`` / ``binary``), and
Voyage's own SDK (voyageai-python, ``util.decode_base64_embedding``) reads it with
``np.frombuffer(base64.b64decode(s), np.float32)``: numpy's native float32, which is
little-endian on the machines that write and read it, as the wire helpers decode it. It is smaller than JSON numbers and far faster to read (the SDK asks for
it by default "for performance"). The deployment option ``encoding: float`` asks for JSON
numbers instead, for a Voyage-compatible server without base64; answers in either form are
read whichever was asked.

What it maps:

``input_type``
    ``query`` / ``document`` go as they are (Voyage prepends its retrieval prompt). When
    neither the request nor the deployment gives one, none is sent: Voyage's default,
    ``null``, embeds the text with no prompt.
``dimensions``
    ``output_dimension`` on the models that take it (256, 512, 1024, 2048); a size in
    between is served from the next size up, cut and re-normalised (Matryoshka).
encodings
    On those same models ``base64_binary`` asks for ``output_dtype: ubinary`` and re-packs
    the bits least significant bit first (``providers.upstream.typed``). Voyage documents
    its packing (https://docs.voyageai.com/docs/flexible-dimensions-and-quantization):
    a bit is 1 for a positive value, 0 for zero or below, eight to a byte "with the
    leftmost bit as the most significant bit" (0,1,0,0,1,1,0,1 -> 77). ``base64_int8``
    asks for floats: Voyage's ``int8`` is not the gateway's per-vector scaling.
usage
    ``usage.total_tokens``.

What it cannot do: token ids, contextualized embeddings (``voyage-context-3`` has its own
endpoint). ``extra_body`` keys are forwarded (``truncation``, ...), except ``model``,
``input``, ``output_dimension``, ``output_dtype`` and ``encoding_format``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import Capabilities, EmbedInput, EmbedOptions, NativeEncoding
from providers.catalog import KnownModel, models, widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Settings, choice
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.typed import cut, lsb_first, packed_rows, size_to_ask
from providers.upstream.wire import decode_rows, ordered_items, read_usage

__all__ = ["DEFAULT_BASE_URL", "VoyageProvider"]

DEFAULT_BASE_URL = "https://api.voyageai.com/v1"
MAX_TEXTS = 1000
#: Widths, tokens a text and a call, ``output_dimension`` sizes (none: a fixed width and
#: float only) per model: ``providers.catalog``.
MODELS: Mapping[str, KnownModel] = models("voyage")


class VoyageProvider(UpstreamProvider):
    """Voyage ``/v1/embeddings``; see the module docstring."""

    provider = "voyage"
    display = "Voyage"
    default_base_url = DEFAULT_BASE_URL
    max_inputs = MAX_TEXTS
    # For a model this module does not know: the strictest published caps.
    max_input_tokens = 4_000
    max_request_tokens = 120_000
    known_dimensions = widths("voyage")
    reserved = frozenset({"model", "input", "output_dimension", "output_dtype", "encoding_format"})
    settings = Settings(
        options={
            **COMMON_UPSTREAM_OPTIONS,
            "encoding": choice("base64", "float", default="base64",
                               doc="base64: encoding_format base64 (default); float: JSON numbers"),
        },
        model="required",
        model_message="the voyage provider needs a model, e.g. voyage-3.5",
        input_type=True,
    )

    def setup(self) -> None:
        self.facts = MODELS.get(self.model)
        self.sizes = self.facts.output_sizes if self.facts else ()
        self.base64 = self.option("encoding") == "base64"

    def declare(self) -> Capabilities:
        capabilities = super().declare()
        if self.facts is None:
            return capabilities
        encodings: frozenset[NativeEncoding] = frozenset({"float", "binary"} if self.sizes else {"float"})
        return dataclasses.replace(
            capabilities,
            max_input_tokens=self.facts.max_input_tokens,
            max_request_tokens=self.facts.max_request_tokens or self.max_request_tokens,
            native_encodings=encodings,
        )

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        return (min(self.sizes), max(self.sizes)) if self.sizes else None

    def path(self, options: EmbedOptions) -> str:
        return "/embeddings"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["model"] = self.model
        body["input"] = inputs if isinstance(inputs, list) else list(inputs)
        if options.input_type is not None:
            body["input_type"] = options.input_type
        size = size_to_ask(options.dimensions, self.sizes)
        if size is not None:
            body["output_dimension"] = size
        if options.encoding == "binary":
            body["output_dtype"] = "ubinary"
        if self.base64:
            body["encoding_format"] = "base64"
        return body

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        items = ordered_items(payload.get("data"), len(inputs), where=self.where)
        values = [item.get("embedding") for item in items]
        usage = read_usage(payload)
        dimensions = options.dimensions or self.width
        size = size_to_ask(options.dimensions, self.sizes) or dimensions
        if options.encoding == "binary":
            packed = packed_rows(values, -(-size // 8), where=self.where)
            vectors = cut(lsb_first(packed), dimensions, binary=True)
            return Answer(vectors=vectors, encoding="binary", dimensions=dimensions, prompt_tokens=usage.prompt_tokens)
        floats = decode_rows(values, "float", width=size or None, where=self.where)
        if options.dimensions is not None:
            floats = cut(floats, options.dimensions, binary=False)
        return Answer(vectors=floats, prompt_tokens=usage.prompt_tokens)
