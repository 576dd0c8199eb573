"""The ``models:`` section: each alias and its deployments, and the checks that span a
group of deployments (names, vector spaces, how ``input_type`` is treated)."""

from __future__ import annotations

from gateway.config.reader import Reader
from gateway.config.types import (
    ALIAS_KEYS,
    DEFAULT_BREAKER_COOLDOWN_S,
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HEALTH_INTERVAL_S,
    DEFAULT_TIMEOUT_S,
    DEPLOYMENT_KEYS,
    ENCODING_FORMATS,
    INPUT_TYPES,
    ROUTING_STRATEGIES,
    TOKEN_ID_POLICIES,
    AliasConfig,
    DeploymentConfig,
)
from providers.options import Settings
from providers.registry import UnknownProvider, load_provider_class, settings_of

__all__ = ["default_token_ids", "parse_alias"]


def default_token_ids(provider: str | None, model: str | None) -> str:
    """Token ids are native only where they certainly are: OpenAI's own embedding models,
    which read tiktoken ids; everywhere else clients' ids are cl100k_base (DESIGN.md 1)."""
    if provider == "openai" and (model or "").startswith("text-embedding-"):
        return "native"
    return "cl100k_base"


def parse_alias(name: str, reader: Reader) -> AliasConfig:
    if reader.has("deployments"):
        reader.reject_unknown(ALIAS_KEYS)
        raw_list = reader.raw("deployments")
        if not isinstance(raw_list, list) or not raw_list:
            reader.error("deployments", "must be a non-empty list of deployments")
            raw_list = []
        deployments = [
            _deployment(Reader(raw, f"{reader.at('deployments')}[{i}]", reader.errors), f"{name}-{i}")
            for i, raw in enumerate(raw_list)
        ]
    else:
        deployments = [_deployment(reader, name, extra_allowed=ALIAS_KEYS)]
    _check_names(reader, deployments)
    routing = reader.string("routing", "fallback", choices=ROUTING_STRATEGIES)
    alias = AliasConfig(
        name=name,
        deployments=tuple(d for d in deployments if d is not None),
        routing=routing,
        retries=reader.integer("retries", 0, maximum=10),
        timeout_s=reader.number("timeout_s", DEFAULT_TIMEOUT_S, exclusive=True),
        allow_mixed_spaces=reader.boolean("allow_mixed_spaces", False),
        max_inputs=reader.integer("max_inputs", None, minimum=1),
        max_input_tokens=reader.integer("max_input_tokens", None, minimum=1),
        max_request_tokens=reader.integer("max_request_tokens", None, minimum=1),
        default_encoding_format=reader.string("default_encoding_format", None, choices=ENCODING_FORMATS),
        cache=reader.boolean("cache", True) if reader.has("cache") else None,
    )
    _check_spaces(reader, alias)
    _check_input_types(reader, alias)
    return alias


def _check_names(reader: Reader, deployments: list[DeploymentConfig | None]) -> None:
    seen: set[str] = set()
    for deployment in deployments:
        if deployment is None:
            continue
        if deployment.name in seen:
            reader.error("deployments", f"two deployments are named {deployment.name!r}")
        seen.add(deployment.name)


def _check_spaces(reader: Reader, alias: AliasConfig) -> None:
    spaces = {d.name: d.vector_space for d in alias.deployments}
    if len(set(spaces.values())) > 1 and not alias.allow_mixed_spaces:
        listed = ", ".join(f"{name} (space {space!r})" for name, space in spaces.items())
        reader.error(
            None,
            f"alias {alias.name!r} mixes vector spaces: {listed}; vectors from different "
            "spaces must not be served under one alias (set a common `space`, split the "
            "alias, or set allow_mixed_spaces: true)",
        )


def _input_type_treatment(deployment: DeploymentConfig) -> str:
    if not deployment.honours_input_type:
        return "ignores input_type"
    default = deployment.default_input_type or "the provider's own"
    return f"honours input_type, default {default}"


def _check_input_types(reader: Reader, alias: AliasConfig) -> None:
    """Deployments that may serve the same request must embed it the same way: all honour
    ``input_type`` with one default, or all ignore it."""
    treatments = {d.name: _input_type_treatment(d) for d in alias.deployments}
    if len(set(treatments.values())) > 1 and not alias.allow_mixed_spaces:
        listed = ", ".join(f"{name} ({treatment})" for name, treatment in treatments.items())
        reader.error(
            None,
            f"alias {alias.name!r} treats input_type differently across its deployments: "
            f"{listed}; a query would be embedded one way or another depending on which "
            "deployment serves it (give them one default_input_type, split the alias, or "
            "set allow_mixed_spaces: true)",
        )


def _deployment(
    reader: Reader, default_name: str, *, extra_allowed: tuple[str, ...] = ()
) -> DeploymentConfig | None:
    provider = reader.string("provider")
    settings: Settings | None = None
    if provider is not None:
        try:
            settings = settings_of(load_provider_class(provider))
        except UnknownProvider as exc:
            reader.error("provider", str(exc))
        except ImportError as exc:
            reader.error("provider", f"provider {provider!r} cannot be loaded: {exc}")
    own_keys = settings.keys if settings is not None else frozenset()
    if settings is not None:
        reader.reject_unknown({*DEPLOYMENT_KEYS, *extra_allowed, *own_keys})
    options = {key: reader.node[key] for key in own_keys if reader.node.get(key) is not None}
    model = reader.string("model", None)
    deployment = DeploymentConfig(
        name=reader.string("name", default_name),
        provider=provider or "",
        model=model,
        space=reader.string("space", None),
        base_url=reader.string("base_url", None),
        api_key=reader.string("api_key", None),
        headers=reader.str_map("headers"),
        weight=reader.number("weight", 1.0, exclusive=True),
        dimensions=reader.integer("dimensions", None, minimum=1),
        matryoshka=reader.boolean("matryoshka", False),
        max_inputs=reader.integer("max_inputs", None, minimum=1),
        max_input_tokens=reader.integer("max_input_tokens", None, minimum=1),
        max_request_tokens=reader.integer("max_request_tokens", None, minimum=1),
        price_per_million_tokens=reader.number("price_per_million_tokens", None),
        extra_body=reader.mapping("extra_body"),
        timeout_s=reader.number("timeout_s", DEFAULT_TIMEOUT_S, exclusive=True),
        connect_timeout_s=reader.number("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S, exclusive=True),
        breaker_failures=reader.integer("breaker_failures", DEFAULT_BREAKER_FAILURES, maximum=1000),
        breaker_cooldown_s=reader.number("breaker_cooldown_s", DEFAULT_BREAKER_COOLDOWN_S, exclusive=True),
        health_check=reader.boolean("health_check", False),
        health_interval_s=reader.number("health_interval_s", DEFAULT_HEALTH_INTERVAL_S, exclusive=True),
        token_ids=reader.string(
            "token_ids", default_token_ids(provider, model), choices=TOKEN_ID_POLICIES
        ),
        options=options,
        default_input_type=reader.string("default_input_type", None, choices=INPUT_TYPES),
        honours_input_type=settings is not None and settings.honours_input_type(options),
    )
    if settings is None:
        return None
    if deployment.default_input_type is not None and not deployment.honours_input_type:
        reader.error(
            "default_input_type",
            f"has no effect: provider {provider!r} ignores input_type here"
            + (" (give query_prefix / document_prefix)" if settings.input_type else ""),
        )
    # The provider's own keys are checked against its declared settings, here and only here.
    for key, message in settings.validate(model=deployment.model, base_url=deployment.base_url, options=options):
        reader.error(key, message)
    return deployment
