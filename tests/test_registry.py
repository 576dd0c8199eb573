"""Provider registry: built-ins by name, third-party providers through entry points."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from gateway.config import ConfigError, parse_config
from providers.registry import ENTRY_POINT_GROUP, UnknownProvider, available, load_provider_class

PLUGIN = '''
from providers.local.onnx import OnnxProvider


class EchoModelProvider(OnnxProvider):
    """A third-party provider: here simply the local backend under another name."""
'''


@pytest.fixture()
def installed_plugin(tmp_path: Path) -> Iterator[str]:
    """A real installed distribution (a dist-info folder on sys.path) declaring a provider."""
    (tmp_path / "acme_provider.py").write_text(PLUGIN)
    dist = tmp_path / "acme_provider-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-provider\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nacme = acme_provider:EchoModelProvider\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "acme"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_provider", None)


def test_builtins_are_available() -> None:
    assert {"onnx", "openai", "perplexity"} <= set(available())
    assert load_provider_class("onnx").__name__ == "OnnxProvider"


def test_unknown_provider_names_the_available_ones() -> None:
    with pytest.raises(UnknownProvider) as caught:
        load_provider_class("nope")
    assert "onnx" in str(caught.value) and "openai" in str(caught.value)


def test_entry_point_provider_is_loaded_and_usable_in_config(installed_plugin: str) -> None:
    assert installed_plugin in available()
    assert load_provider_class(installed_plugin).__name__ == "EchoModelProvider"
    config = parse_config({"models": {"m": {"provider": installed_plugin, "model": "all-MiniLM-L6-v2"}}}, {})
    assert config.models["m"].deployments[0].provider == "acme"
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": {"m": {"provider": installed_plugin, "model": "x", "pooling": "max"}}}, {})
    assert any(e.startswith("models.m.pooling") for e in caught.value.errors)
