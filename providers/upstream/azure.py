"""Provider for Azure OpenAI embeddings (``provider: azure``).

API reference: "Azure OpenAI in Azure AI Foundry Models REST API reference", Embeddings
(https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference#embeddings):
``POST {endpoint}/openai/deployments/{deployment-id}/embeddings?api-version={version}``
with the key in an ``api-key`` header; the body and the answer are OpenAI's (``input`` as
text or token-id arrays, ``dimensions`` for text-embedding-3 models, ``encoding_format``
``float`` / ``base64``, ``user``; ``data[].embedding`` and ``usage``). Errors come in
OpenAI's shape; a 429 carries ``retry-after`` / ``retry-after-ms`` (read by
``providers.upstream.errors``).

``base_url`` is the resource endpoint (``https://NAME.openai.azure.com``, required).
Options, besides the openai provider's (``encoding``, ``native_dimensions``,
``dimensions_range``, ``send_user``, ``dimensions``, ``max_connections``):

``deployment``
    The Azure deployment name (required): it is part of the URL.
``api_version``
    The ``api-version`` query parameter. Default ``2024-10-21`` (the current GA version).

``model`` is optional and names the model behind the deployment (``text-embedding-3-small``
...): it gives the width and whether ``dimensions`` is native. Limits as OpenAI's: 2048
inputs a call, 8192 tokens an input. ``input_type`` is ignored (no such notion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from providers.base import EmbedInput, EmbedOptions
from providers.options import Settings, text
from providers.upstream.openai import OpenAIProvider

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIProvider"]

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(OpenAIProvider):
    """An Azure OpenAI deployment: OpenAI's wire format behind Azure's URL and key header."""

    provider = "azure"
    display = "Azure OpenAI"
    default_base_url = None
    auth = "api-key"
    settings = Settings(
        options={
            **OpenAIProvider.settings.options,
            "deployment": text(required=True, doc="the Azure deployment name"),
            "api_version": text(DEFAULT_API_VERSION, doc="the api-version query parameter"),
        },
        base_url="required",
        base_url_message="is required: the resource endpoint, like https://NAME.openai.azure.com",
        check=OpenAIProvider.settings.check,
    )

    def query(self) -> Mapping[str, str]:
        return {"api-version": str(self.option("api_version"))}

    def body(self, inputs: Sequence[EmbedInput], options: EmbedOptions) -> dict[str, Any]:
        # The deployment in the URL names the model; Azure's body has no ``model``.
        body = super().body(inputs, options)
        del body["model"]
        return body

    def path(self, options: EmbedOptions) -> str:
        return f"/openai/deployments/{quote(str(self.option('deployment')), safe='')}/embeddings"
