"""Provider for any server speaking OpenAI's ``POST /embeddings`` (``provider: openai``).

``base_url`` carries the version prefix, as OpenAI's SDKs write it (default
``https://api.openai.com/v1``); requests go to ``{base_url}/embeddings`` with
``Authorization: Bearer <api_key>`` and the deployment's ``headers``. Texts and token-id
arrays are both forwarded. ``extra_body`` keys are forwarded as they are, except the ones
this provider sets itself: ``model``, ``input``, ``encoding_format`` and ``dimensions``.

Options (deployment keys of this provider, all optional):

``dimensions``
    The width of the vectors the deployment serves. Default: known for OpenAI's own
    models (text-embedding-3-small 1536, text-embedding-3-large 3072,
    text-embedding-ada-002 1536); otherwise learned from the first answer, and reported
    as 0 until then. An answer narrower than this, or (once learned) of another width
    than earlier ones, is refused.
``encoding``
    ``base64`` (default): ask for little-endian float32 in base64, which is smaller and
    faster to read than JSON numbers. ``float``: ask for JSON numbers, for servers that
    only speak those. Answers in either form are read whichever was asked.
``native_dimensions``
    Whether the upstream accepts the ``dimensions`` parameter. Default: true for models
    whose name starts with ``text-embedding-3``, else false (the gateway then truncates
    itself where the alias allows it).
``dimensions_range``
    ``[min, max]`` the upstream accepts for ``dimensions``; implies
    ``native_dimensions: true``. Default ``[1, dimensions]``.
``max_connections``
    Connections pooled (and kept alive) to the upstream. Default 100.
``send_user``
    Forward the request's ``user``. Default true.

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
    InvalidInput,
)
from providers.upstream.client import (
    UpstreamClient,
    check_bool,
    check_positive_int,
    check_url,
    is_whole,
)
from providers.upstream.wire import (
    answer_object,
    decode_rows,
    estimate_tokens,
    malformed,
    ordered_items,
    read_usage,
)

__all__ = ["DEFAULT_BASE_URL", "KNOWN_DIMENSIONS", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
#: OpenAI's published limits (seed 004).
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
#: Upper end of the ``dimensions`` range while the native width is still unknown.
OPEN_DIMENSIONS_MAX = 65_536
_ENCODINGS = ("base64", "float")
_RESERVED = frozenset({"model", "input", "encoding_format", "dimensions"})


def _range_problem(value: Any) -> str | None:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(is_whole(v) for v in value)
        or not 1 <= value[0] <= value[1]
    ):
        return "must be [min, max]: two whole numbers with 1 <= min <= max"
    return None


class OpenAIProvider:
    """An OpenAI-compatible upstream; see the module docstring for its options."""

    option_keys = frozenset(
        {"dimensions", "encoding", "native_dimensions", "dimensions_range", "max_connections", "send_user"}
    )

    def __init__(self, spec: DeploymentSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the connection pool ``start()`` would create (for tests,
        e.g. ``httpx.MockTransport``); the provider leaves a transport it was given open."""
        options = spec.options
        self.name = spec.name
        self.model = spec.model or ""
        self._where = f"the upstream of deployment {spec.name!r}"
        self._encoding: str = options.get("encoding", "base64")
        self._send_user = bool(options.get("send_user", True))
        declared = options.get("dimensions")
        self._declared: int | None = declared if is_whole(declared) else KNOWN_DIMENSIONS.get(self.model)
        self._learned: int | None = None
        span = options.get("dimensions_range")
        self._range = (int(span[0]), int(span[1])) if span is not None else None
        default_native = self.model.startswith("text-embedding-3") or self._range is not None
        self._native = bool(options.get("native_dimensions", default_native))
        self._upstream = UpstreamClient.for_spec(spec, default_base_url=DEFAULT_BASE_URL, transport=transport)
        self._capabilities = self._declare()

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, model={self.model!r}, base_url={self._upstream.base_url!r})"

    @staticmethod
    def check_settings(
        *, model: str | None, base_url: str | None, options: dict[str, Any]
    ) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        if not model:
            errors.append(("model", "the openai provider needs the upstream's model name"))
        url_problem = check_url(base_url)
        if url_problem:
            errors.append(("base_url", url_problem))
        encoding = options.get("encoding", "base64")
        if encoding not in _ENCODINGS:
            errors.append(("encoding", f"must be one of {', '.join(_ENCODINGS)}, not {encoding!r}"))
        for key in ("native_dimensions", "send_user"):
            errors += check_bool(options, key)
        errors += check_positive_int(options, "max_connections")
        span = options.get("dimensions_range")
        if span is not None:
            problem = _range_problem(span)
            dimensions = options.get("dimensions")
            if problem:
                errors.append(("dimensions_range", problem))
            elif options.get("native_dimensions") is False:
                errors.append(("dimensions_range", "needs native_dimensions: true"))
            elif is_whole(dimensions) and span[1] > dimensions:
                errors.append(("dimensions_range", f"must not reach past dimensions ({dimensions})"))
        return errors

    def _declare(self) -> Capabilities:
        width = self._declared or self._learned or KNOWN_DIMENSIONS.get(self.model, 0)
        native: tuple[int, int] | None = None
        if self._native:
            native = self._range or (1, width or OPEN_DIMENSIONS_MAX)
        return Capabilities(
            dimensions=width,
            max_inputs=MAX_INPUTS,
            max_input_tokens=MAX_INPUT_TOKENS,
            max_request_tokens=MAX_REQUEST_TOKENS,
            token_ids=True,
            native_dimensions=native,
            native_encodings=frozenset({"float"}),
            accepted_options=None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def start(self) -> None:
        await self._upstream.start()

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def count_tokens(self, inputs: Sequence[EmbedInput]) -> list[int] | None:
        return None

    def _body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        extra = options.extra_body
        body = {k: v for k, v in extra.items() if k not in _RESERVED} if extra else {}
        body["model"] = self.model
        body["input"] = inputs if isinstance(inputs, list) else list(inputs)
        body["encoding_format"] = self._encoding
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        if options.user is not None and self._send_user:
            body["user"] = options.user
        return body

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult:
        if not inputs:
            raise InvalidInput("there is nothing to embed", param="input")
        if options.dimensions is not None and not self._native:
            raise InvalidInput(
                f"deployment {self.name!r} does not take the dimensions parameter", param="dimensions"
            )
        answer = await self._upstream.post_json(
            "/embeddings",
            self._body(inputs, options),
            request_id=options.request_id,
            timeout_s=options.timeout_s,
        )
        payload = answer_object(answer, where=self._where)
        items = ordered_items(payload.get("data"), len(inputs), where=self._where)
        expected = options.dimensions or self._learned
        vectors = decode_rows(
            [item.get("embedding") for item in items], "float", width=expected, where=self._where
        )
        if options.dimensions is None:
            self._learn(int(vectors.shape[1]))
        usage = read_usage(payload)
        # Per-input counts only matter when the upstream reports no total.
        counts = [] if usage.prompt_tokens is not None else [estimate_tokens(item) for item in inputs]
        return EmbeddingResult(
            vectors=vectors,
            token_counts=counts,
            encoding="float",
            prompt_tokens=usage.prompt_tokens if usage.prompt_tokens is not None else sum(counts),
            tokens_estimated=usage.prompt_tokens is None and any(isinstance(i, str) for i in inputs),
            cost_usd=usage.cost_usd,
        )

    def _learn(self, width: int) -> None:
        if self._declared is not None and width < self._declared:
            raise malformed(
                self._where,
                f"the embeddings have {width} dimensions; the deployment is configured for "
                f"{self._declared}",
            )
        if self._learned is None:
            self._learned = width
            self._capabilities = self._declare()

    async def embed_contextualized(
        self, documents: Sequence[Sequence[str]], options: EmbedOptions
    ) -> EmbeddingResult:
        raise InvalidInput(
            f"deployment {self.name!r} (an OpenAI-style upstream) does not produce "
            "contextualized embeddings",
            param="model",
        )
