"""``providers.catalog`` is the one table of per-model facts: the retrieval providers declare
exactly what it lists for a model (width, tokens a text and a call, the sizes they may ask
for, whether it takes a task type), and nothing for a model it does not list."""

from __future__ import annotations

import pytest

from providers.base import DeploymentSpec
from providers.catalog import MODELS, KnownModel
from providers.upstream.base import UpstreamProvider
from providers.upstream.cohere import CohereProvider
from providers.upstream.gemini import GeminiProvider
from providers.upstream.jina import JinaProvider
from providers.upstream.voyage import VoyageProvider

CLASSES: dict[str, type[UpstreamProvider]] = {
    "cohere": CohereProvider, "voyage": VoyageProvider, "jina": JinaProvider, "gemini": GeminiProvider,
}
ENTRIES = [m for m in MODELS if m.provider in CLASSES]


def _build(provider: str, model: str) -> UpstreamProvider:
    return CLASSES[provider](DeploymentSpec(name="d", model=model, base_url="http://127.0.0.1:9", api_key="k"))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda m: f"{m.provider}:{m.model}")
def test_a_listed_model_is_declared_as_the_catalog_says(entry: KnownModel) -> None:
    capabilities = _build(entry.provider, entry.model).capabilities
    assert capabilities.dimensions == entry.dimensions
    assert capabilities.max_input_tokens == entry.max_input_tokens
    if entry.max_request_tokens is not None:
        assert capabilities.max_request_tokens == entry.max_request_tokens
    assert capabilities.native_dimensions == entry.native_dimensions
    assert capabilities.input_type == entry.task_types
    if entry.provider == "voyage":  # typed outputs only on the models with sizes
        assert ("binary" in capabilities.native_encodings) == bool(entry.output_sizes)


@pytest.mark.parametrize("provider", list(CLASSES))
def test_an_unlisted_model_is_learned_not_guessed(provider: str) -> None:
    capabilities = _build(provider, "some-future-model").capabilities
    assert capabilities.dimensions == 0
    assert capabilities.native_dimensions is None


def test_the_sizes_and_caps_fit_together() -> None:
    for entry in MODELS:
        if entry.output_sizes:
            assert list(entry.output_sizes) == sorted(set(entry.output_sizes))
            assert entry.native_dimensions == (entry.output_sizes[0], entry.output_sizes[-1])
        if entry.max_request_tokens is not None:
            assert entry.max_request_tokens >= entry.max_input_tokens
