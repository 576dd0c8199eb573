"""A fake Azure OpenAI embeddings upstream: OpenAI's body and answer behind Azure's URL.

``POST /openai/deployments/{deployment}/embeddings?api-version=...`` with the key in the
``api-key`` header (Azure OpenAI REST reference, Embeddings). Each configured deployment
serves one model of the OpenAI fake's table; an unknown deployment is 404
``DeploymentNotFound``; a missing or unsupported ``api-version`` is 404 ``Resource not
found`` as Azure answers it. Vectors, tokens, limits and faults are the OpenAI fake's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .base import Handler, json_response
from .faults import Fault
from .openai_upstream import OpenAIUpstream

__all__ = ["API_VERSIONS", "AzureUpstream"]

API_VERSIONS = frozenset({"2024-02-01", "2024-06-01", "2024-10-21"})


def azure_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


class AzureUpstream(OpenAIUpstream):
    """``deployments``: Azure deployment name -> model served (a key of ``models``)."""

    auth_header = "api-key"

    def __init__(self, *, deployments: Mapping[str, str], **options: Any) -> None:
        super().__init__(**options)
        self.deployments = dict(deployments)
        routes = [
            Route(f"/openai/deployments/{name}/embeddings", self._endpoint(self._serving(model)), methods=["POST"])
            for name, model in self.deployments.items()
        ]
        # Any other deployment name: Azure's DeploymentNotFound (from _query_error).
        routes.append(Route("/openai/deployments/{deployment}/embeddings", self._endpoint(self._embeddings), methods=["POST"]))
        self.app.router.routes[:0] = routes

    def _query_error(self, request: Request) -> Response | None:
        version = request.query_params.get("api-version")
        if version not in API_VERSIONS:
            return azure_error(404, "404", "Resource not found")
        deployment = request.url.path.split("/")[3] if request.url.path.startswith("/openai/") else ""
        if deployment not in self.deployments:
            return azure_error(
                404, "DeploymentNotFound",
                f"The API deployment for this resource does not exist: {deployment}",
            )
        return None

    def _serving(self, model: str) -> Handler:
        async def handle(body: Any, fault: Fault | None) -> Response:
            # The deployment chose the model; Azure's body carries none.
            if isinstance(body, dict):
                body = {**body, "model": model}
            return await self._embeddings(body, fault)

        return handle
