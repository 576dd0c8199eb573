"""Active health probes: a one-input embed per deployment, at start and every interval.

Opt-in per deployment (``health_check: true``, ``health_interval_s``). A deployment whose
probe fails (a wrong API key, an upstream that is down, a model that will not load) is
marked ``down`` and the router skips it like an open circuit, so no user request has to
find out first; the next successful probe marks it ``up`` again. The state shows in
``/readyz`` (``health`` and ``health_error`` per deployment) and in ``/metrics``
(``gateway_deployment_up``). A probe is bounded by the deployment's ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.runtime import DeploymentRuntime, Runtime
from providers.base import EmbedOptions, ProviderError

__all__ = ["HealthProbes", "PROBE_INPUT"]

logger = logging.getLogger("gateway.routing.health")

PROBE_INPUT = "health check"


class HealthProbes:
    """Probes every deployment that asks for it; :meth:`start` runs the first round."""

    def __init__(self, runtime: Runtime) -> None:
        self.deployments = [d for d in runtime.deployments if d.config.health_check]
        self._tasks: list[asyncio.Task[None]] = []

    async def probe(self, deployment: DeploymentRuntime) -> bool:
        """One probe; updates ``deployment.health`` and says whether it passed."""
        timeout_s = deployment.config.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await deployment.provider.embed([PROBE_INPUT], EmbedOptions(timeout_s=timeout_s))
        except ProviderError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
        except TimeoutError:
            error = f"no answer within {timeout_s:g} s"
        else:
            if deployment.health == "down":
                logger.warning("deployment %s passes its health probe again: back in rotation", deployment.name)
            deployment.health, deployment.health_error = "up", None
            return True
        if deployment.health != "down" or deployment.health_error != error:
            logger.error("deployment %s failed its health probe (%s): skipped until it passes", deployment.name, error)
        deployment.health, deployment.health_error = "down", error
        return False

    async def start(self) -> None:
        """The first round (concurrently, before traffic), then one loop per deployment."""
        if not self.deployments:
            return
        await asyncio.gather(*(self.probe(d) for d in self.deployments))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(d), name=f"health-{d.name}") for d in self.deployments]

    async def _every(self, deployment: DeploymentRuntime) -> None:
        while True:
            await asyncio.sleep(deployment.config.health_interval_s)
            await self.probe(deployment)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
