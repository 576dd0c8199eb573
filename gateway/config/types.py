"""The config's typed objects: frozen dataclasses, named defaults, allowed values.

Read from YAML by :mod:`gateway.config.settings` (the file, the top-level sections) and
:mod:`gateway.config.models` (aliases and their deployments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.cache import CacheConfig
from providers.base import InputType

__all__ = [
    "ALIAS_KEYS",
    "DEPLOYMENT_KEYS",
    "INPUT_TYPES",
    "ROUTING_STRATEGIES",
    "SERVER_KEYS",
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

DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0
SERVER_KEYS = (
    "host", "port", "max_request_bytes", "metrics", "workers",
    "max_connections", "header_timeout_s", "body_timeout_s", "keepalive_timeout_s",
)
_LIMIT_KEYS = ("max_inputs", "max_input_tokens", "max_request_tokens")
DEPLOYMENT_KEYS = (
    "provider", "name", "model", "space", "base_url", "api_key", "headers", "weight",
    "dimensions", "matryoshka", *_LIMIT_KEYS, "price_per_million_tokens", "extra_body",
    "timeout_s", "connect_timeout_s", "breaker_failures", "breaker_cooldown_s",
    "default_input_type", "health_check", "health_interval_s", "token_ids",
)
INPUT_TYPES = ("query", "document")
ALIAS_KEYS = (
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


