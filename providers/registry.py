"""Maps ``provider:`` names in the config to provider classes.

Built-in providers are imported lazily (so an unused backend's dependencies are never
loaded); third-party ones plug in through the entry-point group
``embedding_gateway.providers``, whose names may not shadow a built-in.
"""

from __future__ import annotations

import importlib
import importlib.util
import importlib.metadata
from typing import Any, cast

from providers.base import ProviderClass
from providers.options import Settings, legacy_settings

__all__ = ["ENTRY_POINT_GROUP", "UnknownProvider", "available", "load_provider_class", "settings_of"]

ENTRY_POINT_GROUP = "embedding_gateway.providers"

_BUILTIN: dict[str, str] = {
    "onnx": "providers.local.onnx:OnnxProvider",
    "openai": "providers.upstream.openai:OpenAIProvider",
    "perplexity": "providers.upstream.perplexity:PerplexityProvider",
    "azure": "providers.upstream.azure:AzureOpenAIProvider",
    "tei": "providers.upstream.tei:TEIProvider",
    "ollama": "providers.upstream.ollama:OllamaProvider",
    "cohere": "providers.upstream.cohere:CohereProvider",
    "voyage": "providers.upstream.voyage:VoyageProvider",
    "gemini": "providers.upstream.gemini:GeminiProvider",
    "jina": "providers.upstream.jina:JinaProvider",
}


class UnknownProvider(LookupError):
    """No provider of that name is built in or installed."""


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _importable(target: str) -> bool:
    module = target.partition(":")[0]
    return importlib.util.find_spec(module) is not None


def available() -> list[str]:
    """Every provider name the config may use."""
    builtin = [name for name, target in _BUILTIN.items() if _importable(target)]
    return sorted(set(builtin) | set(_entry_points()))


def load_provider_class(name: str) -> ProviderClass:
    target = _BUILTIN.get(name)
    if target is not None and _importable(target):
        module_name, _, attribute = target.partition(":")
        return cast(ProviderClass, getattr(importlib.import_module(module_name), attribute))
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise UnknownProvider(f"unknown provider {name!r}; available: {', '.join(available())}")
    return cast(ProviderClass, entry_point.load())


def settings_of(provider_class: Any) -> Settings:
    """The class's declared :class:`Settings`; for a plug-in that predates them, its
    ``option_keys`` accepted as they are and its own ``check_settings`` as the check."""
    settings = getattr(provider_class, "settings", None)
    if isinstance(settings, Settings):
        return settings
    return legacy_settings(getattr(provider_class, "option_keys", ()), getattr(provider_class, "check_settings", None))
