"""The skeleton every HTTP upstream provider stands on: :class:`UpstreamProvider`.

How to add a provider (one module in ``providers/upstream/``, one line in
``providers/registry.py``):

1. Subclass :class:`UpstreamProvider` and declare, as class attributes:
   ``provider`` (its config name, e.g. ``"cohere"``) and ``display`` (for messages);
   ``default_base_url`` (``None``: the config must give one; say so with
   ``settings.base_url = "required"``); ``auth`` (``"bearer"``, ``"api-key"``,
   ``"x-goog-api-key"`` or ``"none"``); the limits ``max_inputs`` (inputs a call),
   ``max_input_tokens`` (tokens an input), ``max_request_tokens`` (tokens a call);
   ``native_encodings`` (what the upstream can answer besides float: ``"int8"``,
   ``"binary"``); ``token_ids`` (it takes token-id arrays); ``known_dimensions`` (model -> full width;
   ``providers.catalog`` holds the published ones); ``reserved`` (body keys
   ``extra_body`` may not override); and ``settings``, a :class:`providers.options.Settings`
   with the provider's own keys (start from ``COMMON_UPSTREAM_OPTIONS``). The config
   reader validates them; read them with ``self.option(key)`` (defaults filled in).
   ``Settings(input_type=True)`` declares that the upstream embeds queries and documents
   differently (it becomes ``capabilities.input_type`` and ``/v1/models`` says so).
2. Override the hooks:
   ``path(options)`` the URL path (after ``base_url``); ``body(inputs, options)`` the JSON
   to send (start from ``self.base_body(options)``, which is ``extra_body`` without the
   reserved keys); ``read(payload, inputs, options)`` the :class:`Answer` (vectors in
   input order, their encoding, ``prompt_tokens`` / ``cost_usd`` when the upstream says;
   use ``providers.upstream.wire`` to check and decode). Optional:
   ``native_dimensions(width)`` the ``(min, max)`` the upstream produces natively
   (Matryoshka), ``query()`` a query string for every URL, ``setup()`` to read options
   before the capabilities are declared, ``count_tokens`` when tokens can be counted
   exactly without embedding.
3. Map ``EmbedOptions.input_type`` (``query`` / ``document`` / None = the provider's own
   default; the deployment's ``default_input_type`` is already applied) to the upstream's
   own field in ``body``, when ``settings.input_type`` is true.
4. Errors need nothing: :class:`UpstreamClient` turns transport failures and error
   statuses into the provider error tree (``providers.upstream.errors`` holds the table,
   incl. 401/403, 429 with ``retry-after``, 5xx); ``wire`` raises
   ``UpstreamResponseError`` for malformed answers. Override ``read`` only to read a
   different shape; raise ``wire.malformed(self.where, "...")`` for what it refuses.
5. Usage: return ``prompt_tokens`` in the :class:`Answer` when the upstream reports it;
   when it is ``None`` the skeleton estimates per input (``wire.estimate_tokens``) and
   sets ``tokens_estimated``.
6. Add a fake upstream in ``tests/fakes/`` (a real HTTP server following the provider's
   API reference) and tests through the gateway with the openai SDK.

The skeleton does the rest: the pooled client (``max_connections``), ``start`` /
``aclose``, the capabilities, refusing token ids or ``dimensions`` the upstream cannot
take, learning the width from the first answer when no one declared it, and the
``EmbeddingResult``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import httpx
import numpy.typing as npt

from providers.base import (
    INPUT,
    Capabilities,
    DeploymentSpec,
    EmbeddingResult,
    EmbedInput,
    EmbedOptions,
    InputType,
    InvalidInput,
    NativeEncoding,
)
from providers.options import COMMON_UPSTREAM_OPTIONS, Problems, Settings
from providers.upstream.client import AuthStyle, UpstreamClient
from providers.upstream.wire import answer_object, estimate_tokens, malformed

__all__ = ["Answer", "UpstreamProvider"]

#: Upper end of the ``dimensions`` range while the native width is still unknown.
OPEN_DIMENSIONS_MAX = 65_536


@dataclass(slots=True, kw_only=True)
class Answer:
    """What :meth:`UpstreamProvider.read` found in an answer. ``vectors`` are in input
    order: float32 for ``float``, int8 for ``int8``, packed uint8 for ``binary``."""

    vectors: npt.NDArray[Any]
    encoding: NativeEncoding = "float"
    #: Output dimensions (needed for ``binary``, whose rows are bytes); 0: the row width.
    dimensions: int = 0
    #: Tokens the upstream reports for the call; None: not reported (the skeleton estimates).
    prompt_tokens: int | None = None
    cost_usd: float | None = None


class UpstreamProvider(ABC):
    """Base of the HTTP upstream providers; see the module docstring for how to add one."""

    provider: ClassVar[str] = "upstream"
    display: ClassVar[str] = "the upstream"
    default_base_url: ClassVar[str | None] = None
    auth: ClassVar[AuthStyle] = "bearer"
    # Limits: class attributes, or set in ``setup()`` from the deployment's options.
    max_inputs: int = 2048
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    native_encodings: ClassVar[frozenset[NativeEncoding]] = frozenset({"float"})
    token_ids: ClassVar[bool] = False
    known_dimensions: ClassVar[Mapping[str, int]] = {}
    reserved: ClassVar[frozenset[str]] = frozenset({"model", "input"})
    settings: ClassVar[Settings] = Settings(options=COMMON_UPSTREAM_OPTIONS, model="required")

    def __init__(self, spec: DeploymentSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the connection pool ``start()`` would create (for tests,
        e.g. ``httpx.MockTransport``); the provider leaves a transport it was given open."""
        self.name = spec.name
        self.model = spec.model or ""
        self.spec = spec
        self.where = f"the upstream of deployment {spec.name!r}"
        declared = self.option("dimensions") if "dimensions" in self.settings.options else None
        #: The width the config or the model's published size says; None: learn it.
        self.declared: int | None = declared or self.known_dimensions.get(self.model)
        self.learned: int | None = None
        self.setup()
        self.upstream = UpstreamClient.for_spec(
            spec,
            default_base_url=self.default_base_url or "",
            auth=self.auth,
            query=self.query(),
            transport=transport,
        )
        self._capabilities = self.declare()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, "
            f"base_url={self.upstream.base_url!r})"
        )

    # -- settings ---------------------------------------------------------------------------

    @classmethod
    def check_settings(
        cls, *, model: str | None, base_url: str | None, options: dict[str, Any]
    ) -> Problems:
        """Every problem of a deployment's settings (the config reader reports them)."""
        return cls.settings.validate(model=model, base_url=base_url, options=options)

    def option(self, key: str) -> Any:
        """The deployment's value for one of ``settings.options``, else its default."""
        return self.settings.value(self.spec.options, key)

    # -- hooks ------------------------------------------------------------------------------

    def setup(self) -> None:  # noqa: B027 (an optional hook: most providers need no setup)
        """Read options before the capabilities are declared (nothing by default)."""

    def query(self) -> Mapping[str, str]:
        """Query parameters for every URL (none by default)."""
        return {}

    def native_dimensions(self, width: int) -> tuple[int, int] | None:
        """``(min, max)`` the upstream produces natively; None: it takes no ``dimensions``."""
        return None

    @abstractmethod
    def path(self, options: EmbedOptions) -> str:
        """The path (after ``base_url``) a call is posted to."""

    @abstractmethod
    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        """The JSON body of one call (start from :meth:`base_body`)."""

    @abstractmethod
    def read(self, payload: dict[str, Any], inputs: Sequence[EmbedInput], options: EmbedOptions) -> Answer:
        """The vectors and usage of one answer."""

    def count_tokens(
        self, inputs: Sequence[EmbedInput], *, input_type: InputType | None = None
    ) -> list[int] | None:
        return None

    # -- the skeleton -----------------------------------------------------------------------

    @property
    def width(self) -> int:
        """The full width of the vectors; 0 while unknown."""
        return self.declared or self.learned or 0

    def declare(self) -> Capabilities:
        width = self.width
        return Capabilities(
            dimensions=width,
            max_inputs=self.max_inputs,
            max_input_tokens=self.max_input_tokens,
            max_request_tokens=self.max_request_tokens,
            token_ids=self.token_ids,
            native_dimensions=self.native_dimensions(width),
            native_encodings=self.native_encodings,
            input_type=self.settings.honours_input_type(self.spec.options),
            accepted_options=None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def start(self) -> None:
        await self.upstream.start()

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def base_body(self, options: EmbedOptions) -> dict[str, Any]:
        """``extra_body`` without the keys this provider sets itself."""
        extra = options.extra_body
        return {k: v for k, v in extra.items() if k not in self.reserved} if extra else {}

    def check_request(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> None:
        """Refuse what the upstream cannot take, before sending anything."""
        if not inputs:
            raise InvalidInput("there is nothing to embed", param="input")
        if not self.token_ids:
            for index, item in enumerate(inputs):
                if not isinstance(item, str):
                    raise InvalidInput(
                        f"{INPUT} is a list of token ids; {self.display} accepts text only", index=index
                    )
        if options.dimensions is not None and self._capabilities.native_dimensions is None:
            raise InvalidInput(
                f"deployment {self.name!r} does not take the dimensions parameter", param="dimensions"
            )

    async def post(self, path: str, body: Mapping[str, Any], options: EmbedOptions) -> dict[str, Any]:
        """POST to the upstream; the answer, checked to be a JSON object."""
        answer = await self.upstream.post_json(
            path, body, request_id=options.request_id, timeout_s=options.timeout_s
        )
        return answer_object(answer, where=self.where)

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult:
        self.check_request(inputs, options)
        payload = await self.post(self.path(options), self.body(inputs, options), options)
        answer = self.read(payload, inputs, options)
        if options.dimensions is None and answer.encoding != "binary":
            self.learn(int(answer.vectors.shape[1]))
        return self.result(inputs, answer)

    def expected_width(self, options: EmbedOptions) -> int | None:
        """The row width an answer must have: the one asked for, else the one learned."""
        return options.dimensions or self.learned

    def learn(self, width: int) -> None:
        """Remember the width of the first full-width answer (refusing one narrower than
        the declared width)."""
        if self.declared is not None and width < self.declared:
            raise malformed(
                self.where,
                f"the embeddings have {width} dimensions; the deployment is configured for "
                f"{self.declared}",
            )
        if self.learned is None:
            self.learned = width
            self._capabilities = self.declare()

    def result(self, inputs: Sequence[EmbedInput], answer: Answer) -> EmbeddingResult:
        """The result, with the upstream's token count or, when it gave none, an estimate."""
        known = answer.prompt_tokens
        # Per-input counts only matter when the upstream reports no total.
        counts = [] if known is not None else [estimate_tokens(item) for item in inputs]
        return EmbeddingResult(
            vectors=answer.vectors,
            token_counts=counts,
            encoding=answer.encoding,
            dimensions=answer.dimensions,
            prompt_tokens=known if known is not None else sum(counts),
            tokens_estimated=known is None and any(isinstance(i, str) for i in inputs),
            cost_usd=answer.cost_usd,
        )

    async def embed_contextualized(
        self, documents: Sequence[Sequence[str]], options: EmbedOptions
    ) -> EmbeddingResult:
        raise InvalidInput(
            f"deployment {self.name!r} ({self.display}) does not produce contextualized embeddings",
            param="model",
        )
