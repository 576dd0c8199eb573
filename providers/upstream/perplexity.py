"""Provider for Perplexity's embeddings API (``provider: perplexity``).

``base_url`` is the host root (default ``https://api.perplexity.ai``). The plain models
(``pplx-embed-v1-0.6b``: 1024 dimensions, ``pplx-embed-v1-4b``: 2560) serve
``POST /v1/embeddings``; the contextualized ones (``pplx-embed-context-v1-0.6b`` /
``-4b``, any model whose name holds ``-context-``) serve
``POST /v1/contextualizedembeddings`` only. Perplexity takes text only, and Matryoshka
``dimensions`` from 128 up to the model's width.

Perplexity never answers floats: it is asked for ``base64_int8``, returned as an int8
matrix (``encoding="int8"``; the gateway scales and re-normalises), or for
``base64_binary`` when the call asks for ``binary``, whose packed bytes pass through
untouched (``encoding="binary"``). ``usage.cost.total_cost`` becomes ``cost_usd``.
``extra_body`` keys are forwarded, except ``model``, ``input``, ``encoding_format`` and
``dimensions``, which this provider sets itself.

Options (deployment keys of this provider, all optional):

``dimensions``
    Required for a model this module does not know (its full width); for a known
    model, at most its width.
``max_connections``
    Connections pooled (and kept alive) to the upstream. Default 100.

Errors are translated in ``providers.upstream.client`` (its docstring holds the table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from providers.base import (
    Capabilities,
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    InvalidInput,
    NativeEncoding,
)
from providers.catalog import widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Problems, Settings, is_whole
from providers.upstream.base import Answer, UpstreamProvider
from providers.upstream.wire import decode_rows, estimate_tokens, ordered_items, read_usage

__all__ = ["DEFAULT_BASE_URL", "MODEL_DIMENSIONS", "PerplexityProvider"]

DEFAULT_BASE_URL = "https://api.perplexity.ai"
MODEL_DIMENSIONS: dict[str, int] = widths("perplexity")
MIN_DIMENSIONS = 128
#: Perplexity's published limits (seeds 000 and 001).
MAX_INPUTS = 512
MAX_INPUT_TOKENS = 32_768
MAX_REQUEST_TOKENS = 120_000
MAX_DOCUMENTS = 512
MAX_CHUNKS = 16_000
EMBEDDINGS_PATH = "/v1/embeddings"
CONTEXTUALIZED_PATH = "/v1/contextualizedembeddings"
_KNOWN = ", ".join(MODEL_DIMENSIONS)


def is_contextualized(model: str) -> bool:
    return "-context-" in model


def _cross_check(model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
    problems: Problems = []
    if base_url is not None and base_url.rstrip("/").endswith("/v1"):
        problems.append((
            "base_url",
            "is the host root (like https://api.perplexity.ai); the gateway appends "
            "/v1/embeddings itself",
        ))
    dimensions = options.get("dimensions")
    if not model:
        return problems
    if model in MODEL_DIMENSIONS:
        width = MODEL_DIMENSIONS[model]
        if is_whole(dimensions) and dimensions > width:
            problems.append(("dimensions", f"{model} returns at most {width} dimensions"))
    elif not is_whole(dimensions):
        problems.append((
            "model",
            f"unknown Perplexity model {model!r}; known: {_KNOWN} "
            "(for a newer model, give its width as dimensions)",
        ))
    return problems


class PerplexityProvider(UpstreamProvider):
    """Perplexity's ``/v1/embeddings`` or ``/v1/contextualizedembeddings``, by model."""

    provider = "perplexity"
    display = "Perplexity"
    default_base_url = DEFAULT_BASE_URL
    max_inputs = MAX_INPUTS
    max_input_tokens = MAX_INPUT_TOKENS
    max_request_tokens = MAX_REQUEST_TOKENS
    native_encodings = frozenset({"int8", "binary"})
    known_dimensions = MODEL_DIMENSIONS
    reserved = frozenset({"model", "input", "encoding_format", "dimensions"})
    settings = Settings(
        options=COMMON_UPSTREAM_OPTIONS,
        model="required",
        model_message=f"the perplexity provider needs a model: {_KNOWN}",
        check=_cross_check,
    )

    def setup(self) -> None:
        # A known model's width wins over a declared one (which may only be narrower).
        self.declared = MODEL_DIMENSIONS.get(self.model) or self.declared
        self.contextualized = is_contextualized(self.model)

    @property
    def dimensions(self) -> int:
        return self.declared or 0

    def declare(self) -> Capabilities:
        width = self.dimensions
        return Capabilities(
            dimensions=width,
            max_inputs=MAX_DOCUMENTS if self.contextualized else MAX_INPUTS,
            max_input_tokens=MAX_INPUT_TOKENS,
            max_request_tokens=MAX_REQUEST_TOKENS,
            token_ids=False,
            native_dimensions=(min(MIN_DIMENSIONS, width), width) if width else None,
            native_encodings=self.native_encodings,
            contextualized=self.contextualized,
            accepted_options=None,
            max_documents=MAX_DOCUMENTS,
            max_chunks=MAX_CHUNKS,
        )

    def path(self, options: EmbedOptions) -> str:
        return CONTEXTUALIZED_PATH if self.contextualized else EMBEDDINGS_PATH

    @staticmethod
    def _encoding(options: EmbedOptions) -> NativeEncoding:
        return "binary" if options.encoding == "binary" else "int8"

    def body(self, inputs: Any, options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body.update(model=self.model, input=inputs, encoding_format=f"base64_{self._encoding(options)}")
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        return body

    def _width(self, encoding: NativeEncoding, options: EmbedOptions) -> tuple[int, int | None]:
        """(dimensions, row length in bytes) the answer must have; 0/None when unknown."""
        dimensions = options.dimensions or self.dimensions
        if not dimensions:
            return 0, None
        return dimensions, -(-dimensions // 8) if encoding == "binary" else dimensions

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        encoding = self._encoding(options)
        items = ordered_items(payload.get("data"), len(inputs), where=self.where)
        dimensions, row_bytes = self._width(encoding, options)
        vectors = decode_rows(
            [item.get("embedding") for item in items], encoding, width=row_bytes, where=self.where
        )
        usage = read_usage(payload)
        return Answer(
            vectors=vectors, encoding=encoding, dimensions=dimensions,
            prompt_tokens=usage.prompt_tokens, cost_usd=usage.cost_usd,
        )

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult:
        if self.contextualized:
            raise InvalidInput(
                f"{self.model} embeds chunks of documents: use /v1/contextualizedembeddings",
                param="model",
            )
        self.check_request(inputs, options)
        payload = await self.post(EMBEDDINGS_PATH, self.body(list(inputs), options), options)
        answer = self.read(payload, inputs, options)
        return self._result(answer, [estimate_tokens(t) for t in inputs])

    async def embed_contextualized(
        self, documents: Sequence[Sequence[str]], options: EmbedOptions
    ) -> EmbeddingResult:
        if not self.contextualized:
            raise InvalidInput(
                f"{self.model} does not produce contextualized embeddings; "
                "use a pplx-embed-context model",
                param="model",
            )
        if not documents or not all(documents):
            raise InvalidInput("every document needs at least one chunk", param="input")
        payload = await self.post(CONTEXTUALIZED_PATH, self.body([list(d) for d in documents], options), options)
        encoding = self._encoding(options)
        entries = ordered_items(payload.get("data"), len(documents), where=self.where)
        values: list[Any] = []
        for d, (entry, document) in enumerate(zip(entries, documents)):
            chunks = ordered_items(entry.get("data"), len(document), where=self.where, what=f"the chunks of document {d}")
            values += [chunk.get("embedding") for chunk in chunks]
        dimensions, row_bytes = self._width(encoding, options)
        vectors = decode_rows(values, encoding, width=row_bytes, where=self.where)
        usage = read_usage(payload)
        answer = Answer(
            vectors=vectors, encoding=encoding, dimensions=dimensions,
            prompt_tokens=usage.prompt_tokens, cost_usd=usage.cost_usd,
        )
        counts = [sum(estimate_tokens(chunk) for chunk in document) for document in documents]
        return self._result(answer, counts)

    @staticmethod
    def _result(answer: Answer, counts: list[int]) -> EmbeddingResult:
        """Per-item estimates are kept even when the upstream counted (one per document on
        the contextualized route)."""
        known = answer.prompt_tokens
        return EmbeddingResult(
            vectors=answer.vectors,
            token_counts=counts,
            encoding=answer.encoding,
            dimensions=answer.dimensions,
            prompt_tokens=known if known is not None else sum(counts),
            tokens_estimated=known is None,
            cost_usd=answer.cost_usd,
        )
