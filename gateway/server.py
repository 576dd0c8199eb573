"""Running the gateway under uvicorn: one process, or N workers sharing one port.

With ``workers > 1`` uvicorn's supervisor binds the socket once and starts N processes
that each accept on it; each worker builds its own app from the config file (its own
local models, its own ledger writer) through :func:`worker_app`. The supervisor forwards
SIGTERM to every worker, each finishes its requests and flushes its ledger before it
exits, and a worker that dies is replaced. Everything a worker needs arrives through the
environment, set here before the workers start.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from gateway import __version__
from gateway.config import GatewayConfig, load_config, redact_url
from gateway.usage.workers import METRICS_DIR_ENV

__all__ = ["run", "startup_line", "worker_app"]

logger = logging.getLogger("gateway")

_CONFIG_ENV = "GATEWAY_WORKER_CONFIG"
_LOG_FORMAT_ENV = "GATEWAY_WORKER_LOG_FORMAT"
_LOG_LEVEL_ENV = "GATEWAY_WORKER_LOG_LEVEL"
GRACEFUL_SHUTDOWN_S = 30


def startup_line(config: GatewayConfig, *, host: str, port: int, workers: int) -> str:
    """One line that says what this gateway is: version, aliases, auth, ledger, state, cache."""
    aliases = ", ".join(config.models)
    auth = f"auth on ({len(config.auth.keys)} keys)" if config.auth is not None else "auth OFF"
    ledger = f"ledger {redact_url(config.usage.ledger)}" if config.usage.enabled else "ledger off"
    state = f"state {config.state.display} (failure: {config.state.failure})" if config.state else "state in-process"
    return (
        f"embedding-gateway {__version__} on http://{host}:{port} with {workers} worker(s): "
        f"{len(config.models)} alias(es) [{aliases}]; {auth}; {ledger}; {state}; {_cache(config, workers)}; "
        f"config {config.source or '(built in)'}"
    )


def _cache(config: GatewayConfig, workers: int) -> str:
    cache = config.cache
    if not cache.enabled:
        return "cache off"
    backend = redact_url(cache.backend) if cache.backend.startswith("sqlite") else cache.backend
    shared = cache.backend == "redis" or workers == 1 or cache.backend.startswith("sqlite")
    return f"cache {backend} (scope {cache.scope}{'' if shared else ', one per worker'})"


def run(config: GatewayConfig, *, host: str, port: int, workers: int, log_level: str, log_format: str) -> None:
    """Serves until SIGTERM or SIGINT."""
    import uvicorn

    from gateway.app import create_app, server_options

    options = dict(
        host=host, port=port, log_level=log_level.lower(), access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, log_config=None,
        **server_options(config),  # connection limits and keep-alive (gateway.app says which)
    )
    if workers == 1:
        app = create_app(config, log_format=log_format)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    if config.source is None:
        raise ValueError("several workers need a config file: each worker loads it")
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ.update({
        _CONFIG_ENV: str(Path(config.source).resolve()),
        _LOG_FORMAT_ENV: log_format,
        _LOG_LEVEL_ENV: log_level,
        METRICS_DIR_ENV: metrics_dir,
    })
    try:
        uvicorn.run("gateway.server:worker_app", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> object:
    """The app of one worker (uvicorn calls this in each worker process)."""
    from gateway.app import create_app
    from gateway.cli import setup_logging

    log_format = os.environ.get(_LOG_FORMAT_ENV, "text")
    setup_logging(os.environ.get(_LOG_LEVEL_ENV, "info"), log_format)
    config = load_config(os.environ[_CONFIG_ENV])
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    logger.info("worker %d starting", os.getpid())
    return create_app(config, log_format=log_format, metrics_dir=Path(metrics_dir) if metrics_dir else None)
