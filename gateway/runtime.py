"""Live objects built from the config: each deployment's provider, each alias's limits."""

from __future__ import annotations

import dataclasses
import logging

import orjson
from dataclasses import dataclass, field
from typing import Sequence

from gateway.config import AliasConfig, DeploymentConfig, GatewayConfig
from providers.base import Capabilities, DeploymentSpec, InputType, Provider
from providers.catalog import list_price
from providers.registry import load_provider_class

__all__ = ["AliasRuntime", "DeploymentRuntime", "Runtime", "build_runtime"]

logger = logging.getLogger("gateway.runtime")

DEFAULT_MAX_INPUTS = 2048
DEFAULT_MAX_REQUEST_TOKENS = 300_000


@dataclass(eq=False)
class DeploymentRuntime:
    config: DeploymentConfig
    provider: Provider
    alias: str
    in_flight: int = 0
    ready: bool = False
    #: ``unknown`` (not probed), ``up`` or ``down``, from the health probe when one is configured.
    health: str = "unknown"
    #: Why the last probe failed (no secrets: the provider error's message).
    health_error: str | None = None
    #: USD per million tokens: the configured price, else the catalog's list price, else None.
    price_per_million_tokens: float | None = None

    def __post_init__(self) -> None:
        configured = self.config.price_per_million_tokens
        self.price_per_million_tokens = (
            configured if configured is not None else list_price(self.config.provider, self.config.model)
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def capabilities(self) -> Capabilities:
        return self.provider.capabilities

    @property
    def max_inputs(self) -> int:
        return min(self.config.max_inputs or 10**9, self.capabilities.max_inputs)

    @property
    def max_request_tokens(self) -> int:
        return min(self.config.max_request_tokens or 10**12, self.capabilities.max_request_tokens)

    @property
    def max_input_tokens(self) -> int:
        return min(self.config.max_input_tokens or 10**9, self.capabilities.max_input_tokens)

    @property
    def dimensions(self) -> int:
        return self.config.dimensions or self.capabilities.dimensions

    def input_type(self, requested: InputType | None) -> InputType | None:
        """What the provider is told: the request's ``input_type``, else the deployment's
        ``default_input_type``, else None (the provider's own default)."""
        return requested or self.config.default_input_type

    def dimension_range(self) -> tuple[int, int] | None:
        """The output sizes this deployment can serve: natively, or by Matryoshka truncation."""
        native = self.capabilities.native_dimensions
        if native is not None:
            return native
        if self.config.matryoshka:
            return (1, self.dimensions)
        return None


@dataclass(frozen=True, kw_only=True)
class AliasLimits:
    """What an alias's deployments allow together, derived from their capabilities."""

    #: Inputs a request may hold (None: no cap; upstream aliases split into batches).
    max_inputs: int | None
    #: Inputs and tokens a batch may hold so that every deployment accepts it.
    batch_inputs: int
    batch_tokens: int
    max_input_tokens: int
    #: Keys allowed in extra_body; ``None`` when some deployment forwards anything.
    accepted_options: frozenset[str] | None
    token_ids: bool
    dimensions: int
    #: The output sizes every deployment can serve (natively or by truncation), if any.
    dimension_range: tuple[int, int] | None


@dataclass(eq=False)
class AliasRuntime:
    config: AliasConfig
    deployments: list[DeploymentRuntime] = field(default_factory=list)
    _limits: AliasLimits | None = field(default=None, init=False, repr=False)
    _limits_from: list[Capabilities] = field(default_factory=list, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    def limits(self) -> AliasLimits:
        """The alias's limits, derived again only when a deployment's capabilities changed
        (a provider replaces its ``Capabilities`` when it learns something, such as its
        upstream's width): every request reads them, and deriving them is not free."""
        limits = self._limits
        seen = self._limits_from
        if limits is not None and len(seen) == len(self.deployments):
            for deployment, capabilities in zip(self.deployments, seen):
                if deployment.provider.capabilities is not capabilities:
                    break
            else:
                return limits
        self._limits_from = [d.capabilities for d in self.deployments]
        limits = self._limits = self._derive()
        return limits

    def _derive(self) -> AliasLimits:
        deployments = self.deployments
        config = self.config
        if config.max_inputs is not None:
            max_inputs: int | None = config.max_inputs
        elif any(d.capabilities.in_process for d in deployments):
            # Upstreams get batches they accept, so only the alias's own setting caps them;
            # in-process models are capped by default to protect the CPU.
            max_inputs = DEFAULT_MAX_INPUTS
        else:
            max_inputs = None
        option_sets = [d.capabilities.accepted_options for d in deployments]
        accepted: frozenset[str] | None = None
        if all(s is not None for s in option_sets):
            accepted = frozenset().union(*[s for s in option_sets if s is not None])
        ranges = [d.dimension_range() for d in deployments]
        dimension_range: tuple[int, int] | None = None
        if all(r is not None for r in ranges):
            lows, highs = zip(*[r for r in ranges if r is not None])
            dimension_range = (max(lows), min(highs))
        return AliasLimits(
            max_inputs=max_inputs,
            batch_inputs=min(d.max_inputs for d in deployments),
            batch_tokens=min(d.max_request_tokens for d in deployments),
            max_input_tokens=config.max_input_tokens or min(d.max_input_tokens for d in deployments),
            accepted_options=accepted,
            token_ids=all(d.capabilities.token_ids for d in deployments),
            dimensions=deployments[0].dimensions,
            dimension_range=dimension_range,
        )

    @property
    def max_inputs(self) -> int | None:
        """Inputs a request may hold (see :class:`AliasLimits`)."""
        return self.limits().max_inputs

    @property
    def max_request_tokens(self) -> int:
        return self.config.max_request_tokens or DEFAULT_MAX_REQUEST_TOKENS

    @property
    def max_input_tokens(self) -> int:
        return self.limits().max_input_tokens

    @property
    def dimensions(self) -> int:
        return self.limits().dimensions

    def batch_limits(self) -> tuple[int, int]:
        """(inputs, tokens) a batch may hold so that every deployment of the alias accepts it."""
        limits = self.limits()
        return limits.batch_inputs, limits.batch_tokens

    def dimension_range(self) -> tuple[int, int] | None:
        return self.limits().dimension_range

    def accepted_options(self) -> frozenset[str] | None:
        """Keys allowed in extra_body: ``None`` when some deployment forwards anything."""
        return self.limits().accepted_options

    def input_types(self) -> list[str]:
        """The ``input_type`` values the alias honours: both when every deployment embeds a
        query and a document differently, none when they ignore the field."""
        if all(d.capabilities.input_type for d in self.deployments):
            return ["query", "document"]
        return []

    def encodings(self) -> list[str]:
        return ["float", "base64", "base64_int8", "base64_binary"]


@dataclass(eq=False)
class Runtime:
    config: GatewayConfig
    aliases: dict[str, AliasRuntime]

    @property
    def deployments(self) -> Sequence[DeploymentRuntime]:
        return [d for alias in self.aliases.values() for d in alias.deployments]

    def providers(self) -> list[Provider]:
        return list({id(d.provider): d.provider for d in self.deployments}.values())

    async def start(self) -> None:
        for deployment in self.deployments:
            await deployment.provider.start()
            deployment.ready = True
            logger.info("deployment %s (%s) ready", deployment.name, deployment.config.provider)

    async def aclose(self) -> None:
        for deployment in self.deployments:
            deployment.ready = False
        for provider in self.providers():
            try:
                await provider.aclose()
            except Exception as exc:  # one provider failing to close must not keep the others open
                logger.error("closing provider %s failed: %s", provider.name, type(exc).__name__)

    @property
    def ready(self) -> bool:
        return all(d.ready for d in self.deployments)


def _spec(config: DeploymentConfig) -> DeploymentSpec:
    return DeploymentSpec(
        name=config.name,
        model=config.model,
        base_url=config.base_url,
        api_key=config.api_key,
        headers=dict(config.headers),
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        options=dict(config.options),
    )


def build_runtime(config: GatewayConfig) -> Runtime:
    """Providers are constructed here but not started (see :meth:`Runtime.start`)."""
    aliases: dict[str, AliasRuntime] = {}
    # Deployments with identical settings share one provider: one model in memory, one pool.
    shared: dict[bytes, Provider] = {}
    for name, alias_config in config.models.items():
        alias = AliasRuntime(alias_config)
        for deployment_config in alias_config.deployments:
            spec = _spec(deployment_config)
            key = orjson.dumps(
                {**dataclasses.asdict(spec), "name": None, "provider": deployment_config.provider},
                option=orjson.OPT_SORT_KEYS,
                default=str,
            )
            provider = shared.get(key)
            if provider is None:
                provider = load_provider_class(deployment_config.provider)(spec)
                shared[key] = provider
            alias.deployments.append(DeploymentRuntime(deployment_config, provider, alias=name))
        aliases[name] = alias
    return Runtime(config, aliases)
