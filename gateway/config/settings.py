"""The config file (DESIGN.md section 2) loaded into frozen, typed objects.

Every problem is reported with its YAML path, all at once; unknown keys are errors.
Nothing outside this module and the CLI reads the environment.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gateway.config.cache import CacheConfig, parse_cache
from gateway.config.reader import Reader
from gateway.config.yamlfile import read_yaml
from gateway.config.envsubst import substitute
from providers.base import InputType
from providers.options import Settings
from providers.registry import UnknownProvider, load_provider_class, settings_of

__all__ = [
    "AliasConfig",
    "AuthConfig",
    "CacheConfig",
    "ConfigError",
    "DEFAULT_BREAKER_COOLDOWN_S",
    "DEFAULT_BREAKER_FAILURES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DeploymentConfig",
    "ENCODING_FORMATS",
    "TOKEN_ID_POLICIES",
    "GatewayConfig",
    "KeyConfig",
    "ServerConfig",
    "StateConfig",
    "UsageConfig",
    "check_workers",
    "default_token_ids",
    "load_config",
    "load_default_config",
    "parse_config",
    "redact_url",
]

#: A deployment's circuit opens after this many consecutive failures (0: never)...
DEFAULT_BREAKER_FAILURES = 5
#: ...and lets one probe through after this many seconds.
DEFAULT_BREAKER_COOLDOWN_S = 30.0

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_LEDGER = "sqlite:///gateway-usage.db"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
ROUTING_STRATEGIES = ("fallback", "weighted", "least-busy")
#: What ``encoding_format`` may say (and an alias's ``default_encoding_format``).
ENCODING_FORMATS = ("float", "base64", "base64_int8", "base64_binary")
#: How a deployment reads token-id inputs: as its own ids, as tiktoken cl100k_base ids
#: (decoded to text), or not at all.
TOKEN_ID_POLICIES = ("native", "cl100k_base", "refuse")
#: The built-in config ``serve`` runs when no config file is found (DESIGN.md section 3).
DEFAULT_CONFIG_RESOURCE = "default.yaml"

DEFAULT_HEALTH_INTERVAL_S = 60.0
LEDGER_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
STATE_SCHEMES = ("redis://", "rediss://", "unix://")
STATE_FAILURE_MODES = ("open", "closed")
#: Every key the gateway writes in shared state starts with this (several gateways may share one Redis).
DEFAULT_STATE_PREFIX = "embedding-gateway:"

_TOP_KEYS = ("server", "auth", "usage", "models", "state", "state_failure", "state_prefix", "cache")
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0
_SERVER_KEYS = (
    "host", "port", "max_request_bytes", "metrics", "workers",
    "max_connections", "header_timeout_s", "body_timeout_s", "keepalive_timeout_s",
)
_LIMIT_KEYS = ("max_inputs", "max_input_tokens", "max_request_tokens")
_DEPLOYMENT_KEYS = (
    "provider", "name", "model", "space", "base_url", "api_key", "headers", "weight",
    "dimensions", "matryoshka", *_LIMIT_KEYS, "price_per_million_tokens", "extra_body",
    "timeout_s", "connect_timeout_s", "breaker_failures", "breaker_cooldown_s",
    "default_input_type", "health_check", "health_interval_s", "token_ids",
)
INPUT_TYPES = ("query", "document")
_ALIAS_KEYS = (
    "routing", "retries", "timeout_s", "allow_mixed_spaces", "deployments", "default_encoding_format",
    "cache", *_LIMIT_KEYS,
)


class ConfigError(Exception):
    """The config is not usable; ``errors`` holds one line per problem, with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    #: Serve /metrics and count requests for it.
    metrics: bool = True
    #: Processes sharing the port (``serve --workers`` overrides it).
    workers: int = 1
    #: Open connections at most; past it a new one is answered 503 and closed at once.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: From its first byte (or its connection), a request's headers must arrive within this...
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    #: ...and its whole body within this after them.
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    #: An idle keep-alive connection is closed after this.
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S


@dataclass(frozen=True, kw_only=True)
class KeyConfig:
    id: str
    key: str = field(repr=False)
    models: tuple[str, ...] = ("*",)
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    keys: tuple[KeyConfig, ...] = ()
    admin_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, kw_only=True)
class UsageConfig:
    ledger: str = DEFAULT_LEDGER

    @property
    def enabled(self) -> bool:
        return self.ledger != "off"


@dataclass(frozen=True, kw_only=True)
class StateConfig:
    """Shared state (``state: redis://...``): rate limits and circuits shared by workers and replicas."""

    url: str = field(repr=False)
    #: What rate limits do while the state server cannot be reached: admit (open) or refuse (closed).
    failure: str = "open"
    prefix: str = DEFAULT_STATE_PREFIX

    @property
    def display(self) -> str:
        """The URL without its password, for logs."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` as ``scheme://user:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    name: str
    provider: str
    model: str | None = None
    space: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    weight: float = 1.0
    dimensions: int | None = None
    matryoshka: bool = False
    max_inputs: int | None = None
    max_input_tokens: int | None = None
    max_request_tokens: int | None = None
    price_per_million_tokens: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: Consecutive failures that open the deployment's circuit breaker (0: never opens).
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S
    #: Probe the deployment with a one-input embed at start and every ``health_interval_s``.
    health_check: bool = False
    health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    #: One of :data:`TOKEN_ID_POLICIES`; the reader fills in :func:`default_token_ids`.
    token_ids: str = "cl100k_base"
    options: dict[str, Any] = field(default_factory=dict)
    #: ``query`` or ``document`` for requests that send no ``input_type``; None: the
    #: provider's own default.
    default_input_type: InputType | None = None
    #: The provider embeds queries and documents differently (from its declared settings).
    honours_input_type: bool = False

    @property
    def vector_space(self) -> str:
        return self.space or self.model or self.name


@dataclass(frozen=True, kw_only=True)
class AliasConfig:
    name: str
    deployments: tuple[DeploymentConfig, ...]
    routing: str = "fallback"
    retries: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    allow_mixed_spaces: bool = False
    max_inputs: int | None = None
    max_input_tokens: int | None = None
    max_request_tokens: int | None = None
    #: Used when a request sends no ``encoding_format``; None: the route's own default.
    default_encoding_format: str | None = None
    #: Use the embedding cache for this alias (None: whenever a cache backend is configured).
    cache: bool | None = None


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    models: dict[str, AliasConfig]
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig | None = None
    usage: UsageConfig = field(default_factory=UsageConfig)
    state: StateConfig | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    source: str | None = None

    def caches(self, alias: str) -> bool:
        """Whether requests for ``alias`` use the embedding cache."""
        if not self.cache.enabled:
            return False
        setting = self.models[alias].cache if alias in self.models else None
        return setting is not False


def check_workers(config: GatewayConfig, workers: int) -> list[str]:
    """Why ``config`` cannot be served by ``workers`` processes (or several replicas): each
    process would admit a key's whole rate limit unless the limits live in ``state``."""
    limited = [k.id for k in (config.auth.keys if config.auth else ()) if k.rpm is not None or k.tpm is not None]
    if workers > 1 and limited and config.state is None:
        return [
            f"state: is required with {workers} workers while keys have rate limits "
            f"({', '.join(limited)}): each process would admit the whole limit; set "
            "state: redis://HOST:6379/0 (or serve one worker)"
        ]
    return []


def default_token_ids(provider: str | None, model: str | None) -> str:
    """Token ids are native only where they certainly are: OpenAI's own embedding models,
    which read tiktoken ids; everywhere else clients' ids are cl100k_base (DESIGN.md 1)."""
    if provider == "openai" and (model or "").startswith("text-embedding-"):
        return "native"
    return "cl100k_base"


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a config file; raises :class:`ConfigError` listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from exc
    return _load_text(text, str(path), env)


def load_default_config(env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The built-in config shipped in this package: the bundled local model, the usage
    ledger in the working directory."""
    resource = importlib.resources.files("gateway.config") / DEFAULT_CONFIG_RESOURCE
    if isinstance(resource, Path):  # a file on disk: several workers each load it by its path
        return load_config(resource, env)
    text = resource.read_text(encoding="utf-8")
    return _load_text(text, f"built-in default ({DEFAULT_CONFIG_RESOURCE})", env)


def _load_text(text: str, source: str, env: Mapping[str, str] | None) -> GatewayConfig:
    data, problems = read_yaml(text)
    if problems:
        raise ConfigError([f"{source}: {problem}" for problem in problems])
    return parse_config(data, os.environ if env is None else env, source=source)


def parse_config(
    data: Any, env: Mapping[str, str], *, source: str | None = None
) -> GatewayConfig:
    errors: list[str] = []
    data = substitute(data, env, "", errors)
    top = Reader(data, "", errors)
    top.reject_unknown(_TOP_KEYS)
    server = _server(top.child("server"))
    auth = _auth(top.child("auth")) if top.has("auth") else None
    usage_reader = top.child("usage")
    usage_reader.reject_unknown(("ledger",))
    if usage_reader.node.get("ledger") is False:  # YAML reads a bare `off` as false
        usage_reader.node["ledger"] = "off"
    usage = UsageConfig(ledger=usage_reader.string("ledger", DEFAULT_LEDGER))
    if usage.ledger != "off" and not usage.ledger.startswith(LEDGER_SCHEMES):
        usage_reader.error("ledger", "must be sqlite:///PATH, postgresql://USER@HOST/DB or off")
    state = _state(top)
    cache = CacheConfig()
    if top.has("cache"):
        cache = parse_cache(top.child("cache"), state=state.url if state else None)
    models_reader = top.child("models")
    if not top.has("models") or not models_reader.node:
        top.error("models", "must name at least one model alias")
    models = {
        str(alias): _alias(str(alias), models_reader.child(str(alias)))
        for alias in models_reader.node
    }
    config = GatewayConfig(
        models=models, server=server, auth=auth, usage=usage, state=state, cache=cache, source=source
    )
    errors.extend(check_workers(config, server.workers))
    if errors:
        raise ConfigError(errors)
    return config


def _state(top: Reader) -> StateConfig | None:
    failure = top.string("state_failure", "open", choices=STATE_FAILURE_MODES)
    prefix = top.string("state_prefix", DEFAULT_STATE_PREFIX)
    if not top.has("state"):
        return None
    url = top.string("state", None)
    if url is None:
        return None
    if not url.startswith(STATE_SCHEMES):
        top.error("state", "must be a Redis URL: redis://HOST:6379/0, rediss://... or unix:///PATH")
        return None
    return StateConfig(url=url, failure=failure, prefix=prefix)


def _server(reader: Reader) -> ServerConfig:
    reader.reject_unknown(_SERVER_KEYS)
    return ServerConfig(
        host=reader.string("host", DEFAULT_HOST),
        port=reader.integer("port", DEFAULT_PORT, minimum=0, maximum=65535),
        max_request_bytes=reader.integer("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES, minimum=1024),
        metrics=reader.boolean("metrics", True),
        workers=reader.integer("workers", 1, minimum=1, maximum=256),
        max_connections=reader.integer("max_connections", DEFAULT_MAX_CONNECTIONS, minimum=1, maximum=1_000_000),
        header_timeout_s=reader.number("header_timeout_s", DEFAULT_HEADER_TIMEOUT_S, exclusive=True),
        body_timeout_s=reader.number("body_timeout_s", DEFAULT_BODY_TIMEOUT_S, exclusive=True),
        keepalive_timeout_s=reader.number("keepalive_timeout_s", DEFAULT_KEEPALIVE_TIMEOUT_S, exclusive=True),
    )


def _auth(reader: Reader) -> AuthConfig:
    reader.reject_unknown(("keys", "admin_keys"))
    keys: list[KeyConfig] = []
    raw_keys = reader.raw("keys", [])
    if not isinstance(raw_keys, list):
        reader.error("keys", "must be a list of keys")
        raw_keys = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_keys):
        key_reader = Reader(raw, f"{reader.at('keys')}[{index}]", reader.errors)
        key_reader.reject_unknown(("id", "key", "models", "rpm", "tpm"))
        key_id = key_reader.string("id")
        if key_id in seen:
            key_reader.error("id", f"{key_id!r} is used by another key")
        seen.add(key_id)
        keys.append(
            KeyConfig(
                id=key_id,
                key=key_reader.string("key"),
                models=key_reader.str_list("models", ("*",)),
                rpm=key_reader.integer("rpm", None, minimum=1),
                tpm=key_reader.integer("tpm", None, minimum=1),
            )
        )
    return AuthConfig(keys=tuple(keys), admin_keys=reader.str_list("admin_keys"))


def _alias(name: str, reader: Reader) -> AliasConfig:
    if reader.has("deployments"):
        reader.reject_unknown(_ALIAS_KEYS)
        raw_list = reader.raw("deployments")
        if not isinstance(raw_list, list) or not raw_list:
            reader.error("deployments", "must be a non-empty list of deployments")
            raw_list = []
        deployments = [
            _deployment(Reader(raw, f"{reader.at('deployments')}[{i}]", reader.errors), f"{name}-{i}")
            for i, raw in enumerate(raw_list)
        ]
    else:
        deployments = [_deployment(reader, name, extra_allowed=_ALIAS_KEYS)]
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
        reader.reject_unknown({*_DEPLOYMENT_KEYS, *extra_allowed, *own_keys})
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
