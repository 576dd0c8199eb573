"""The contract between the gateway and its backends.

A provider is a transport: it turns texts (or token ids) into a numpy matrix plus
exact token counts. It knows its own limits and raises its own typed errors; all
policy (retries, fallback, splitting, encodings, accounting) lives in ``gateway/``.

Exception hierarchy::

    ProviderError
    ├── ProviderUnavailable          the backend could not serve now: try another
    │   ├── ProviderTimeout          no answer within the deadline
    │   ├── ProviderOverloaded       queue full (may carry retry_after)
    │   │   └── UpstreamRateLimited  the upstream answered 429 (its Retry-After kept)
    │   ├── UpstreamUnreachable      no connection could be made (refused, no route)
    │   └── UpstreamConnectionError  the connection broke: reset or dropped mid-answer
    ├── UpstreamResponseError        the backend answered, but badly (5xx, bad JSON, bad vectors)
    │   └── UpstreamAuthError        the backend refused our credentials
    └── InvalidInput                 the request itself is wrong for this backend: do not retry
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy.typing as npt

from providers.options import Settings

__all__ = [
    "Capabilities",
    "EmbeddingResult",
    "INPUT",
    "InputType",
    "InvalidInput",
    "NativeEncoding",
    "Provider",
    "ProviderError",
    "ProviderOverloaded",
    "ProviderTimeout",
    "ProviderUnavailable",
    "UpstreamAuthError",
    "UpstreamConnectionError",
    "UpstreamRateLimited",
    "UpstreamUnreachable",
    "UpstreamResponseError",
    "EmbedInput",
    "EmbedOptions",
    "DeploymentSpec",
    "ProviderClass",
]

NativeEncoding = Literal["float", "int8", "binary"]
#: What an input is for, to retrieval models that embed the two differently.
InputType = Literal["query", "document"]
#: One input: a text, or a list of token ids in the backend's own vocabulary.
EmbedInput = str | list[int]


#: Stands for the offending input's position in a :class:`ProviderError`'s message.
INPUT = "{input}"


class ProviderError(Exception):
    """Base of every error a provider raises.

    ``index`` is the position of the offending input within the inputs the provider was
    given, when one input is at fault: ``param`` is then ``input[index]``, and the marker
    :data:`INPUT` in the message reads the same. A caller that gave the provider a slice
    moves the position with :meth:`shift`, so the client hears its own.
    """

    def __init__(self, message: str, *, param: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.index = index
        self._param = param

    @property
    def message(self) -> str:
        return self.detail if self.index is None else self.detail.replace(INPUT, f"input[{self.index}]")

    @property
    def param(self) -> str | None:
        return self._param if self.index is None else f"input[{self.index}]"

    def shift(self, offset: int) -> None:
        """Count the offending input from ``offset`` inputs earlier."""
        if self.index is not None:
            self.index += offset

    def __str__(self) -> str:
        return self.message


class ProviderUnavailable(ProviderError):
    """The backend cannot serve right now; another deployment may."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class ProviderTimeout(ProviderUnavailable):
    """The backend did not answer in time."""


class ProviderOverloaded(ProviderUnavailable):
    """The backend's queue is full, or it rate-limited us."""


class UpstreamRateLimited(ProviderOverloaded):
    """The upstream answered 429; ``retry_after`` is its own Retry-After, when it sent one."""


class UpstreamUnreachable(ProviderUnavailable):
    """No connection could be made: the upstream is down or unreachable."""


class UpstreamConnectionError(ProviderUnavailable):
    """The connection broke (reset, or dropped before a full answer arrived)."""


class UpstreamResponseError(ProviderError):
    """The backend answered, but the answer is unusable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamAuthError(UpstreamResponseError):
    """The backend refused the gateway's credentials (the client cannot fix that)."""


class InvalidInput(ProviderError):
    """The input is not acceptable for this backend; retrying will not help."""


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a backend declares about itself."""

    dimensions: int
    max_inputs: int
    max_input_tokens: int
    max_request_tokens: int
    token_ids: bool = False
    #: Output dimensions the backend can produce natively (Matryoshka), as (min, max).
    native_dimensions: tuple[int, int] | None = None
    native_encodings: frozenset[NativeEncoding] = frozenset({"float"})
    contextualized: bool = False
    #: The backend embeds a query and a document differently (it honours ``input_type``).
    input_type: bool = False
    #: The backend computes on this machine (the gateway caps requests to protect it).
    in_process: bool = False
    #: Options the backend understands in ``extra_body``; ``None`` means "forward anything".
    accepted_options: frozenset[str] | None = None
    #: Batching limits for contextualized requests.
    max_documents: int = 512
    max_chunks: int = 16_000


@dataclass(kw_only=True, slots=True)
class EmbedOptions:
    """Per-call options that the gateway has already validated."""

    dimensions: int | None = None
    encoding: NativeEncoding = "float"
    user: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    timeout_s: float | None = None
    #: ``query`` or ``document`` (the deployment's default already applied), or None: the
    #: provider's own default.
    input_type: InputType | None = None


@dataclass(kw_only=True, slots=True)
class EmbeddingResult:
    """Vectors in input order plus token accounting.

    ``vectors`` is float32 ``(n, d)`` for ``encoding == "float"``, int8 ``(n, d)`` for
    ``"int8"``, or uint8 ``(n, d // 8)`` LSB-first packed bits for ``"binary"``.
    """

    vectors: npt.NDArray[Any]
    token_counts: list[int]
    encoding: NativeEncoding = "float"
    dimensions: int = 0
    prompt_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None

    def __post_init__(self) -> None:
        if not self.dimensions:
            width = int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0
            self.dimensions = width * 8 if self.encoding == "binary" else width
        if self.prompt_tokens is None:
            self.prompt_tokens = int(sum(self.token_counts))


@runtime_checkable
class Provider(Protocol):
    """A backend. Implementations are constructed from a deployment's settings."""

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    async def start(self) -> None: ...

    async def embed(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> EmbeddingResult: ...

    async def embed_contextualized(
        self, documents: Sequence[Sequence[str]], options: EmbedOptions
    ) -> EmbeddingResult:
        """Chunks embedded with their document as context (when ``capabilities.contextualized``).

        ``vectors`` holds every chunk's row, documents in order and chunks in order within
        each; ``token_counts`` holds one count per document.
        """
        ...

    def count_tokens(
        self, inputs: Sequence[EmbedInput], *, input_type: InputType | None = None
    ) -> list[int] | None:
        """Exact token counts when the backend can tell without embedding, else None
        (``input_type`` as the embedding would get it: a prefix may add tokens)."""
        ...

    async def aclose(self) -> None: ...



@dataclass(frozen=True, kw_only=True)
class DeploymentSpec:
    """What a provider is built from: the deployment's settings, already validated.

    ``options`` holds the provider's own keys (see ``ProviderClass.settings``), checked.
    """

    name: str
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    options: dict[str, Any] = field(default_factory=dict)


class ProviderClass(Protocol):
    """What the registry holds: a class that builds a provider from a spec.

    ``settings`` declares the deployment keys the class takes besides the common ones,
    with their kinds, defaults and cross-key checks (see :mod:`providers.options`); the
    config reader validates every deployment against it, once. (A plug-in written
    before ``settings`` existed may still give ``option_keys`` and ``check_settings``
    instead: see ``providers.registry.settings_of``.)
    """

    settings: Settings

    def __call__(self, spec: DeploymentSpec) -> Provider: ...
