"""Fake upstream embedding servers (real HTTP, on loopback) for tests and benchmarks.

    from fakes import OpenAIUpstream, run_in_thread

    with run_in_thread(OpenAIUpstream(api_key="sk-test")) as server:
        server.app.faults.add("status", status=429, retry_after="1")
        ...  # talk to server.base_url
        assert server.app.log.last.header("authorization") == "Bearer sk-test"
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import FakeUpstream
    from .cohere_upstream import COHERE_MODELS, CohereConfig, CohereUpstream
    from .gemini_upstream import GEMINI_MODELS, GeminiConfig, GeminiUpstream
    from .jina_upstream import JINA_MODELS, JinaConfig, JinaUpstream
    from .voyage_upstream import VOYAGE_MODELS, VoyageConfig, VoyageUpstream
    from .faults import DEFAULT_RANDOM_FAULTS, MODES, Fault, FaultPlan
    from .openai_upstream import DEFAULT_OPENAI_MODELS, OpenAIConfig, OpenAIUpstream
    from .perplexity_schema import DEFAULT_PRICES, PPLX_CONTEXT_MODELS, PPLX_MODELS
    from .perplexity_schema import PerplexityConfig
    from .perplexity_upstream import PerplexityUpstream
    from .recording import RecordedRequest, RequestLog
    from .server import RunningServer, run_async, run_in_thread, serve_forever
    from .vectors import (
        binary_of,
        contextual_matrix,
        contextual_vector,
        fake_matrix,
        fake_token_count,
        fake_vector,
        int8_of,
        msb_packed,
        typed_matrix,
    )

__all__ = [
    "COHERE_MODELS",
    "GEMINI_MODELS",
    "JINA_MODELS",
    "VOYAGE_MODELS",
    "CohereConfig",
    "CohereUpstream",
    "GeminiConfig",
    "GeminiUpstream",
    "JinaConfig",
    "JinaUpstream",
    "VoyageConfig",
    "VoyageUpstream",
    "msb_packed",
    "typed_matrix",
    "DEFAULT_OPENAI_MODELS",
    "DEFAULT_PRICES",
    "DEFAULT_RANDOM_FAULTS",
    "MODES",
    "PPLX_CONTEXT_MODELS",
    "PPLX_MODELS",
    "FakeUpstream",
    "Fault",
    "FaultPlan",
    "OpenAIConfig",
    "OpenAIUpstream",
    "PerplexityConfig",
    "PerplexityUpstream",
    "RecordedRequest",
    "RequestLog",
    "RunningServer",
    "binary_of",
    "contextual_matrix",
    "contextual_vector",
    "fake_matrix",
    "fake_token_count",
    "fake_vector",
    "int8_of",
    "run_async",
    "run_in_thread",
    "serve_forever",
]

# Imported on first use, so ``python -m fakes.openai_upstream`` does not find its own
# module already imported by the package (runpy warns about that).
_HOMES = {
    "FakeUpstream": "base",
    "COHERE_MODELS": "cohere_upstream",
    "CohereConfig": "cohere_upstream",
    "CohereUpstream": "cohere_upstream",
    "GEMINI_MODELS": "gemini_upstream",
    "GeminiConfig": "gemini_upstream",
    "GeminiUpstream": "gemini_upstream",
    "JINA_MODELS": "jina_upstream",
    "JinaConfig": "jina_upstream",
    "JinaUpstream": "jina_upstream",
    "VOYAGE_MODELS": "voyage_upstream",
    "VoyageConfig": "voyage_upstream",
    "VoyageUpstream": "voyage_upstream",
    "DEFAULT_RANDOM_FAULTS": "faults",
    "MODES": "faults",
    "Fault": "faults",
    "FaultPlan": "faults",
    "DEFAULT_OPENAI_MODELS": "openai_upstream",
    "OpenAIConfig": "openai_upstream",
    "OpenAIUpstream": "openai_upstream",
    "DEFAULT_PRICES": "perplexity_schema",
    "PPLX_CONTEXT_MODELS": "perplexity_schema",
    "PPLX_MODELS": "perplexity_schema",
    "PerplexityConfig": "perplexity_schema",
    "PerplexityUpstream": "perplexity_upstream",
    "RecordedRequest": "recording",
    "RequestLog": "recording",
    "RunningServer": "server",
    "run_async": "server",
    "run_in_thread": "server",
    "serve_forever": "server",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    if name in __all__:
        return getattr(importlib.import_module(".vectors", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
