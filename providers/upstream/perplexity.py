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

from typing import Any, Sequence

import httpx

from providers.base import (
    Capabilities,
    DeploymentSpec,
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    INPUT,
    InvalidInput,
    NativeEncoding,
)
from providers.upstream.client import (
    UpstreamClient,
    check_positive_int,
    check_url,
    is_whole,
)
from providers.upstream.wire import answer_object, decode_rows, estimate_tokens, ordered_items, read_usage

__all__ = ["DEFAULT_BASE_URL", "MODEL_DIMENSIONS", "PerplexityProvider"]

DEFAULT_BASE_URL = "https://api.perplexity.ai"
MODEL_DIMENSIONS: dict[str, int] = {
    "pplx-embed-v1-0.6b": 1024,
    "pplx-embed-v1-4b": 2560,
    "pplx-embed-context-v1-0.6b": 1024,
    "pplx-embed-context-v1-4b": 2560,
}
MIN_DIMENSIONS = 128
#: Perplexity's published limits (seeds 000 and 001).
MAX_INPUTS = 512
MAX_INPUT_TOKENS = 32_768
MAX_REQUEST_TOKENS = 120_000
MAX_DOCUMENTS = 512
MAX_CHUNKS = 16_000
EMBEDDINGS_PATH = "/v1/embeddings"
CONTEXTUALIZED_PATH = "/v1/contextualizedembeddings"
_RESERVED = frozenset({"model", "input", "encoding_format", "dimensions"})


def is_contextualized(model: str) -> bool:
    return "-context-" in model


class PerplexityProvider:
    """Perplexity's ``/v1/embeddings`` or ``/v1/contextualizedembeddings``, by model."""

    option_keys = frozenset({"dimensions", "max_connections"})

    def __init__(self, spec: DeploymentSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the connection pool ``start()`` would create (for tests,
        e.g. ``httpx.MockTransport``); the provider leaves a transport it was given open."""
        self.name = spec.name
        self.model = spec.model or ""
        self._where = f"the upstream of deployment {spec.name!r}"
        declared = spec.options.get("dimensions")
        width = MODEL_DIMENSIONS.get(self.model) or (declared if is_whole(declared) else 0)
        self.dimensions: int = width
        self.contextualized = is_contextualized(self.model)
        self._upstream = UpstreamClient.for_spec(spec, default_base_url=DEFAULT_BASE_URL, transport=transport)
        self._capabilities = Capabilities(
            dimensions=width,
            max_inputs=MAX_DOCUMENTS if self.contextualized else MAX_INPUTS,
            max_input_tokens=MAX_INPUT_TOKENS,
            max_request_tokens=MAX_REQUEST_TOKENS,
            token_ids=False,
            native_dimensions=(min(MIN_DIMENSIONS, width), width) if width else None,
            native_encodings=frozenset({"int8", "binary"}),
            contextualized=self.contextualized,
            accepted_options=None,
            max_documents=MAX_DOCUMENTS,
            max_chunks=MAX_CHUNKS,
        )

    def __repr__(self) -> str:
        return (
            f"PerplexityProvider(name={self.name!r}, model={self.model!r}, "
            f"base_url={self._upstream.base_url!r})"
        )

    @staticmethod
    def check_settings(
        *, model: str | None, base_url: str | None, options: dict[str, Any]
    ) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        url_problem = check_url(base_url)
        if url_problem:
            errors.append(("base_url", url_problem))
        elif base_url is not None and base_url.rstrip("/").endswith("/v1"):
            errors.append((
                "base_url",
                "is the host root (like https://api.perplexity.ai); the gateway appends "
                "/v1/embeddings itself",
            ))
        errors += check_positive_int(options, "max_connections")
        dimensions = options.get("dimensions")
        known = ", ".join(MODEL_DIMENSIONS)
        if not model:
            errors.append(("model", f"the perplexity provider needs a model: {known}"))
        elif model in MODEL_DIMENSIONS:
            width = MODEL_DIMENSIONS[model]
            if is_whole(dimensions) and dimensions > width:
                errors.append(("dimensions", f"{model} returns at most {width} dimensions"))
        elif not is_whole(dimensions):
            errors.append((
                "model",
                f"unknown Perplexity model {model!r}; known: {known} "
                "(for a newer model, give its width as dimensions)",
            ))
        return errors

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def start(self) -> None:
        await self._upstream.start()

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def count_tokens(self, inputs: Sequence[EmbedInput]) -> list[int] | None:
        return None

    def _body(self, input: Any, options: EmbedOptions) -> tuple[dict[str, Any], NativeEncoding]:
        encoding: NativeEncoding = "binary" if options.encoding == "binary" else "int8"
        body = {k: v for k, v in options.extra_body.items() if k not in _RESERVED}
        body.update(model=self.model, input=input, encoding_format=f"base64_{encoding}")
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        return body, encoding

    def _width(self, encoding: NativeEncoding, options: EmbedOptions) -> tuple[int, int | None]:
        """(dimensions, row length in bytes) the answer must have; 0/None when unknown."""
        dimensions = options.dimensions or self.dimensions
        if not dimensions:
            return 0, None
        return dimensions, -(-dimensions // 8) if encoding == "binary" else dimensions

    async def _post(self, path: str, input: Any, options: EmbedOptions) -> tuple[dict[str, Any], NativeEncoding]:
        body, encoding = self._body(input, options)
        answer = await self._upstream.post_json(
            path, body, request_id=options.request_id, timeout_s=options.timeout_s
        )
        return answer_object(answer, where=self._where), encoding

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult:
        if self.contextualized:
            raise InvalidInput(
                f"{self.model} embeds chunks of documents: use /v1/contextualizedembeddings",
                param="model",
            )
        if not inputs:
            raise InvalidInput("there is nothing to embed", param="input")
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInput(
                    f"{INPUT} is a list of token ids; Perplexity accepts text only",
                    index=index,
                )
        payload, encoding = await self._post(EMBEDDINGS_PATH, list(inputs), options)
        items = ordered_items(payload.get("data"), len(inputs), where=self._where)
        dimensions, row_bytes = self._width(encoding, options)
        vectors = decode_rows(
            [item.get("embedding") for item in items], encoding, width=row_bytes, where=self._where
        )
        return self._result(payload, vectors, encoding, dimensions, [estimate_tokens(t) for t in inputs])

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
        payload, encoding = await self._post(CONTEXTUALIZED_PATH, [list(d) for d in documents], options)
        entries = ordered_items(payload.get("data"), len(documents), where=self._where)
        values: list[Any] = []
        for d, (entry, document) in enumerate(zip(entries, documents)):
            chunks = ordered_items(entry.get("data"), len(document), where=self._where, what=f"the chunks of document {d}")
            values += [chunk.get("embedding") for chunk in chunks]
        dimensions, row_bytes = self._width(encoding, options)
        vectors = decode_rows(values, encoding, width=row_bytes, where=self._where)
        counts = [sum(estimate_tokens(chunk) for chunk in document) for document in documents]
        return self._result(payload, vectors, encoding, dimensions, counts)

    def _result(
        self,
        payload: dict[str, Any],
        vectors: Any,
        encoding: NativeEncoding,
        dimensions: int,
        counts: list[int],
    ) -> EmbeddingResult:
        usage = read_usage(payload)
        return EmbeddingResult(
            vectors=vectors,
            token_counts=counts,
            encoding=encoding,
            dimensions=dimensions,
            prompt_tokens=usage.prompt_tokens if usage.prompt_tokens is not None else sum(counts),
            tokens_estimated=usage.prompt_tokens is None,
            cost_usd=usage.cost_usd,
        )
