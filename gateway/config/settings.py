"""The config file (DESIGN.md section 2) loaded into frozen, typed objects.

Every problem is reported with its YAML path, all at once; unknown keys are errors.
Nothing outside this package and the CLI reads the environment. This module reads the file
and the top-level sections; :mod:`gateway.config.models` reads the aliases.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any, Mapping

from gateway.config.cache import parse_cache
from gateway.config.envsubst import substitute
from gateway.config.models import parse_alias
from gateway.config.reader import Reader
from gateway.config.types import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_CONFIG_RESOURCE,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_LEDGER,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PORT,
    DEFAULT_STATE_PREFIX,
    LEDGER_SCHEMES,
    STATE_FAILURE_MODES,
    STATE_SCHEMES,
    SERVER_KEYS,
    AuthConfig,
    CacheConfig,
    ConfigError,
    GatewayConfig,
    KeyConfig,
    ServerConfig,
    StateConfig,
    UsageConfig,
)
from gateway.config.yamlfile import read_yaml

__all__ = ["check_workers", "load_config", "load_default_config", "parse_config"]

_TOP_KEYS = ("server", "auth", "usage", "models", "state", "state_failure", "state_prefix", "cache")


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
        str(alias): parse_alias(str(alias), models_reader.child(str(alias)))
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
    reader.reject_unknown(SERVER_KEYS)
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


