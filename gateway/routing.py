"""Choosing a deployment for each batch, and moving on when one fails.

Failover is decided by exception class, never by message: ``ProviderUnavailable`` and
``UpstreamResponseError`` move on to the next deployment; ``InvalidInput`` stops at once
(a bad input is bad everywhere).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from gateway.errors import NoDeploymentAvailable
from gateway.runtime import AliasRuntime, DeploymentRuntime
from providers.base import (
    EmbeddingResult,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamResponseError,
)

__all__ = ["Routed", "Router"]

Attempt = Callable[[DeploymentRuntime], Awaitable[EmbeddingResult]]


@dataclass(frozen=True)
class Routed:
    result: EmbeddingResult
    deployment: DeploymentRuntime
    attempts: int


class Router:
    """Orders an alias's deployments by its strategy and tries them within the deadline."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, alias: AliasRuntime) -> list[DeploymentRuntime]:
        deployments = list(alias.deployments)
        strategy = alias.config.routing
        if strategy == "weighted" and len(deployments) > 1:
            first = self._rng.choices(deployments, weights=[d.config.weight for d in deployments])[0]
            return [first, *[d for d in deployments if d is not first]]
        if strategy == "least-busy":
            return sorted(deployments, key=lambda d: d.in_flight)
        return deployments

    async def run(self, alias: AliasRuntime, attempt: Attempt) -> Routed:
        try:
            async with asyncio.timeout(alias.config.timeout_s):
                return await self._try_in_order(alias, self.order(alias), attempt)
        except TimeoutError as exc:
            raise ProviderTimeout(
                f"no deployment of {alias.name!r} answered within its {alias.config.timeout_s:g} s deadline"
            ) from exc

    async def _try_in_order(
        self, alias: AliasRuntime, order: Sequence[DeploymentRuntime], attempt: Attempt
    ) -> Routed:
        last_error: ProviderError | None = None
        attempts = 0
        for deployment in order:
            for _ in range(alias.config.retries + 1):
                attempts += 1
                deployment.in_flight += 1
                try:
                    result = await attempt(deployment)
                except (ProviderUnavailable, UpstreamResponseError) as exc:
                    last_error = exc
                    continue
                finally:
                    deployment.in_flight -= 1
                return Routed(result, deployment, attempts)
        if last_error is not None:
            raise last_error
        raise NoDeploymentAvailable(f"model {alias.name!r} has no deployment to serve it")
