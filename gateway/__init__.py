"""An embedding gateway: one OpenAI-compatible face in front of local and remote backends."""

from gateway.app import create_app
from gateway.config import GatewayConfig, load_config, parse_config

__all__ = ["GatewayConfig", "create_app", "load_config", "parse_config"]
__version__ = "0.1.0"
