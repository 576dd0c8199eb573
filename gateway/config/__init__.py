"""The config file (DESIGN.md section 2) read into frozen, typed objects.

Nothing outside this package reads YAML or the environment; it imports nothing of
``gateway`` but ``errors``.
"""

from gateway.config.models import default_token_ids
from gateway.config.settings import check_workers, load_config, load_default_config, parse_config
from gateway.config.types import (
    DEFAULT_BREAKER_COOLDOWN_S,
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_MAX_REQUEST_BYTES,
    ENCODING_FORMATS,
    TOKEN_ID_POLICIES,
    AliasConfig,
    AuthConfig,
    CacheConfig,
    ConfigError,
    DeploymentConfig,
    GatewayConfig,
    KeyConfig,
    ServerConfig,
    StateConfig,
    UsageConfig,
    redact_url,
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
