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

from collections.abc import Mapping
from typing import Any, ClassVar, Sequence

from providers.base import EmbedInput, EmbedOptions
from providers.catalog import widths
from providers.options import COMMON_UPSTREAM_OPTIONS, Problems, Settings, choice, flag, int_pair, is_whole
from providers.upstream.base import OPEN_DIMENSIONS_MAX, Answer, UpstreamProvider
from providers.upstream.wire import decode_rows, ordered_items, read_usage

__all__ = ["DEFAULT_BASE_URL", "KNOWN_DIMENSIONS", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN_DIMENSIONS: dict[str, int] = widths("openai")
#: OpenAI's published limits (seed 004).
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000


def _cross_check(model: str | None, base_url: str | None, options: Mapping[str, Any]) -> Problems:
    span = options.get("dimensions_range")
    if span is None:
        return []
    dimensions = options.get("dimensions")
    if options.get("native_dimensions") is False:
        return [("dimensions_range", "needs native_dimensions: true")]
    if is_whole(dimensions) and span[1] > dimensions:
        return [("dimensions_range", f"must not reach past dimensions ({dimensions})")]
    return []


class OpenAIProvider(UpstreamProvider):
    """An OpenAI-compatible upstream; see the module docstring for its options."""

    provider = "openai"
    display = "an OpenAI-style upstream"
    default_base_url: ClassVar[str | None] = DEFAULT_BASE_URL
    max_inputs = MAX_INPUTS
    max_input_tokens = MAX_INPUT_TOKENS
    max_request_tokens = MAX_REQUEST_TOKENS
    token_ids = True
    known_dimensions = KNOWN_DIMENSIONS
    reserved = frozenset({"model", "input", "encoding_format", "dimensions"})
    settings = Settings(
        options={
            **COMMON_UPSTREAM_OPTIONS,
            "encoding": choice("base64", "float", default="base64"),
            "native_dimensions": flag(False),
            "dimensions_range": int_pair(),
            "send_user": flag(True),
        },
        model="required",
        model_message="the openai provider needs the upstream's model name",
        check=_cross_check,
    )

    def setup(self) -> None:
        self.encoding: str = self.option("encoding")
        self.send_user = bool(self.option("send_user"))
        span = self.spec.options.get("dimensions_range")
        self.range = (int(span[0]), int(span[1])) if span is not None else None
        default_native = self.model.startswith("text-embedding-3") or self.range is not None
        self.native = bool(self.spec.options.get("native_dimensions", default_native))

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        if not self.native:
            return None
        return self.range or (1, width or OPEN_DIMENSIONS_MAX)

    def path(self, options: EmbedOptions) -> str:
        return "/embeddings"

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        body = self.base_body(options)
        body["model"] = self.model
        body["input"] = inputs if isinstance(inputs, list) else list(inputs)
        body["encoding_format"] = self.encoding
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        if options.user is not None and self.send_user:
            body["user"] = options.user
        return body

    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        items = ordered_items(payload.get("data"), len(inputs), where=self.where)
        vectors = decode_rows(
            [item.get("embedding") for item in items], "float",
            width=self.expected_width(options), where=self.where,
        )
        usage = read_usage(payload)
        return Answer(vectors=vectors, prompt_tokens=usage.prompt_tokens, cost_usd=usage.cost_usd)
