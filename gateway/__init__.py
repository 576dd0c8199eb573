"""An embedding gateway: one OpenAI-compatible face in front of local and remote backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.config import GatewayConfig, load_config, parse_config

__all__ = ["GatewayConfig", "create_app", "load_config", "parse_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that a process needing one light module (the JSON worker,
    # gateway.http.jsonworker) does not import the whole gateway, models and all.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name in ("GatewayConfig", "load_config", "parse_config"):
        import gateway.config

        return getattr(gateway.config, name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
