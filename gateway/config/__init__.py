"""The config file (DESIGN.md section 2) read into frozen, typed objects.

Nothing outside this package reads YAML or the environment; it imports nothing of
``gateway`` but ``errors``.
"""

from gateway.config.settings import (
    DEFAULT_BREAKER_COOLDOWN_S,
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_MAX_REQUEST_BYTES,
    AliasConfig,
    AuthConfig,
    CacheConfig,
    ConfigError,
    DeploymentConfig,
    ENCODING_FORMATS,
    TOKEN_ID_POLICIES,
    GatewayConfig,
    KeyConfig,
    ServerConfig,
    StateConfig,
    UsageConfig,
    check_workers,
    default_token_ids,
    load_config,
    load_default_config,
    redact_url,
    parse_config,
)

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
    "GatewayConfig",
    "KeyConfig",
    "ServerConfig",
    "StateConfig",
    "TOKEN_ID_POLICIES",
    "UsageConfig",
    "check_workers",
    "default_token_ids",
    "load_config",
    "load_default_config",
    "redact_url",
    "parse_config",
]
