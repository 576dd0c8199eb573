"""Choosing a deployment for each batch, retrying it, and moving on when it fails.

The alias's strategy orders its deployments: ``fallback`` in config order, ``weighted``
one drawn by weight then the others in order, ``least-busy`` by calls in flight. A
deployment whose circuit breaker keeps calls out (open, or half-open with its one probe
already out), or that its health probe found down (:mod:`gateway.routing.health`), is
skipped on the first pass. Then:

- A request that called some deployment and saw it fail joins a skipped deployment that
  is being probed, as a last resort: its cooldown is over, it may well be back, and the
  alternative is an error. (Being probed is never a reason to answer 502 while it can serve.)
- A request that found nothing it may call (every circuit open, or open and probing)
  fails at once with 503 and a ``Retry-After`` until the first cooldown ends. It does not
  force a call: a breaker opens after consecutive failures, so a forced call would most
  likely cost the client the whole ``timeout_s`` against a deployment known to be failing
  (a hanging upstream), and under load every request would make one: the load the
  breaker exists to keep off. Recovery is found by the probe each breaker lets through
  when its cooldown ends.

What happens after a failure is decided by exception class and status, never by message:

=================================  ============  =========  ==================
exception                          retry same?   move on?   counts to breaker?
=================================  ============  =========  ==================
InvalidInput (400, 413, 422)       no            no: raise  no
ProviderTimeout (also 408, 504)    yes           yes        yes
ProviderOverloaded (429, full)     yes [1]       yes        yes
UpstreamConnectionError            yes           yes        yes
ProviderUnavailable (502, 503)     yes [1]       yes        yes
UpstreamResponseError 500/502-504  yes           yes        yes
UpstreamResponseError, other [2]   no            yes        yes
UpstreamAuthError (401, 403)       no            yes        yes
any other ProviderError            no            yes        yes
any other exception [3]            no            yes        yes
=================================  ============  =========  ==================

[1] after ``max(backoff, Retry-After)``, when that wait ends before the deadline; else
    the next deployment is tried at once.
[2] a malformed answer (invalid JSON, wrong vector count or width, NaN, bad indices) or
    a status such as 404: the same deployment would most likely answer the same way.
[3] a provider's bug or a fault it did not foresee (e.g. its HTTP library refusing a
    URL): logged with its type only (its text may hold a URL with credentials) and
    treated as a ``ProviderError`` (502 when it is the last), never a 500.

``retries`` is the number of extra attempts on one deployment before moving on; waits
grow exponentially with full jitter (:mod:`gateway.routing.backoff`). A request's deadline
(the alias's ``timeout_s``) bounds everything: each attempt may take at most
``min(deployment timeout_s, time left)`` (enforced by :mod:`gateway.routing.deadlines`, at most
10 ms late), and when nothing is left the request fails with ``ProviderTimeout`` (504).
When every deployment failed, the last error is raised as it is, so a 429 keeps its
Retry-After.

Space guard: the service passes one :class:`SpacePin` per request to every batch; the
first batch served pins the vector space and later batches use only deployments of that
space. A batch that was served from another space while the pin was being set is
discarded and tried again within the pinned space.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from gateway.routing.backoff import Backoff
from gateway.routing.breaker import Breaker, BreakerSettings, Permit
from gateway.routing.deadlines import DeadlineWatch
from gateway.errors import NoDeploymentAvailable
from gateway.usage.metrics import Metrics
from gateway.record import Attempted, BatchTrace
from gateway.runtime import AliasRuntime, DeploymentRuntime
from providers.base import (
    EmbeddingResult,
    InvalidInput,
    ProviderError,
    ProviderOverloaded,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamAuthError,
    UpstreamResponseError,
)

__all__ = ["Attempt", "RETRYABLE_STATUSES", "Routed", "Router", "SpacePin", "outcome_of"]

logger = logging.getLogger("gateway.routing")
Attempt = Callable[[DeploymentRuntime], Awaitable[EmbeddingResult]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Statuses of ``UpstreamResponseError`` worth another attempt on the same deployment.
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(slots=True)
class Routed:
    """A served batch: ``attempts`` calls made, ``fallbacks`` deployments moved past."""

    result: EmbeddingResult
    deployment: DeploymentRuntime
    attempts: int
    fallbacks: int = 0


class SpacePin:
    """The vector space every batch of one request must come from (create one per request)."""

    def __init__(self) -> None:
        self.space: str | None = None
        #: The space the first batch set out to use: later batches try it first.
        self.preferred: str | None = None

    def __repr__(self) -> str:
        return f"SpacePin(space={self.space!r})"

    def admits(self, deployment: DeploymentRuntime) -> bool:
        return self.space is None or deployment.config.vector_space == self.space


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label of an attempt for the metrics (a small fixed set)."""
    if exc is None:
        return "ok"
    if isinstance(exc, InvalidInput):
        return "invalid_input"
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ProviderOverloaded):
        return "rate_limited" if exc.status == 429 else "overloaded"
    if isinstance(exc, ProviderUnavailable):
        return "unavailable"
    if isinstance(exc, UpstreamAuthError):
        return "auth_error"
    if isinstance(exc, ProviderError):
        return "bad_response"
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"


def _in_process(deployment: DeploymentRuntime) -> bool:
    try:
        return deployment.capabilities.in_process
    except ProviderError:  # a local model tells its capabilities only once it is loaded
        return True


def _retryable(exc: ProviderError) -> bool:
    if isinstance(exc, ProviderUnavailable):
        return True
    if isinstance(exc, UpstreamAuthError):
        return False
    return isinstance(exc, UpstreamResponseError) and exc.status in RETRYABLE_STATUSES


class Router:
    """Orders an alias's deployments and tries them within the request's deadline."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        backoff: Backoff | None = None,
        on_breaker: Callable[[Breaker], None] | None = None,
        on_breaker_change: Callable[[str, str], None] | None = None,
    ) -> None:
        """``metrics`` receives attempts, retries, fallbacks and breaker states; ``rng``,
        ``clock`` (seconds, monotonic) and ``sleep`` replace randomness and time in tests.
        ``on_breaker`` is handed each upstream deployment's breaker once it exists and
        ``on_breaker_change(name, state)`` every transition (how circuits are shared)."""
        self.metrics = metrics
        self._on_breaker = on_breaker
        self._on_breaker_change = on_breaker_change
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.clock = clock or time.monotonic
        self.sleep = sleep or asyncio.sleep
        self._breakers: dict[DeploymentRuntime, Breaker] = {}
        self._deadlines = DeadlineWatch()

    def breaker_for(self, deployment: DeploymentRuntime) -> Breaker:
        breaker = self._breakers.get(deployment)
        if breaker is None:
            settings = BreakerSettings(
                failures=deployment.config.breaker_failures, cooldown_s=deployment.config.breaker_cooldown_s
            )
            breaker = Breaker(deployment.name, settings, clock=self.clock, on_change=self._breaker_changed)
            self._breakers[deployment] = breaker
            self._breaker_changed(deployment.name, "closed")
            if self._on_breaker is not None and not _in_process(deployment):
                self._on_breaker(breaker)
        return breaker

    def _breaker_changed(self, name: str, state: str) -> None:
        if self.metrics is not None:
            self.metrics.set_circuit_state(name, state)
        if self._on_breaker_change is not None:
            self._on_breaker_change(name, state)

    def deadline(self, alias: AliasRuntime) -> float:
        """When a request for ``alias`` starting now must be answered, on the router's clock."""
        return self.clock() + alias.config.timeout_s

    def order(self, alias: AliasRuntime, pin: SpacePin | None = None) -> list[DeploymentRuntime]:
        """The alias's deployments in the order its strategy tries them."""
        deployments = list(alias.deployments)
        if pin is not None and pin.space is not None:
            deployments = [d for d in deployments if pin.admits(d)]
        strategy = alias.config.routing
        if strategy == "weighted" and len(deployments) > 1:
            # Drawn among the deployments that would take the call, so an open breaker's
            # share spreads by weight instead of landing on whichever comes next.
            pool = [d for d in deployments if self.breaker_for(d).available()] or deployments
            first = self.rng.choices(pool, weights=[d.config.weight for d in pool])[0]
            deployments = [first, *[d for d in deployments if d is not first]]
        elif strategy == "least-busy":
            deployments.sort(key=lambda d: d.in_flight)
        if pin is not None and pin.space is None and alias.config.allow_mixed_spaces and deployments:
            if pin.preferred is None:
                pin.preferred = deployments[0].config.vector_space
            deployments.sort(key=lambda d: d.config.vector_space != pin.preferred)
        return deployments

    async def run(
        self,
        alias: AliasRuntime,
        attempt: Attempt,
        *,
        pin: SpacePin | None = None,
        deadline: float | None = None,
        trace: BatchTrace | None = None,
    ) -> Routed:
        """Serve one batch with ``attempt(deployment)``.

        ``pin`` holds every batch of a request to one vector space; ``deadline`` (from
        :meth:`deadline`, taken once per request) makes the alias's ``timeout_s`` bound
        the whole request rather than each batch; ``trace`` gets every attempt made.
        """
        batch = _BatchRouting(
            self, alias, attempt, pin=pin, deadline=self.deadline(alias) if deadline is None else deadline,
            trace=trace if trace is not None else BatchTrace(0, 0),
        )
        return await batch.run()

    async def call(
        self, deployment: DeploymentRuntime, breaker: Breaker, permit: Permit, attempt: Attempt, timeout_s: float
    ) -> tuple[EmbeddingResult | None, ProviderError | None, str]:
        """One attempt: its result or its (availability) error, and its outcome label;
        ``InvalidInput`` and anything that is not a provider error propagate."""
        started = time.perf_counter()
        outcome: BaseException | None = None
        deployment.in_flight += 1
        try:
            # The provider is given the deployment's own timeout; this bounds the whole
            # call (httpx's timeouts apply per read) and clips it to the deadline.
            with self._deadlines.limit(timeout_s):
                result = await attempt(deployment)
        except TimeoutError as exc:
            error = ProviderTimeout(f"deployment {deployment.name!r} did not answer within {timeout_s:.3g} s")
            error.__cause__ = exc
            outcome = error
            breaker.failed(permit)
            return None, error, outcome_of(error)
        except InvalidInput as exc:
            outcome = exc
            breaker.released(permit)
            raise
        except ProviderError as exc:
            outcome = exc
            breaker.failed(permit)
            return None, exc, outcome_of(exc)
        except Exception as exc:
            # Not a ProviderError: a provider's bug or a fault it did not foresee. Only its
            # type is told: its text may hold a URL with credentials in it.
            unforeseen = ProviderError(f"deployment {deployment.name!r} failed unexpectedly ({type(exc).__name__})")
            logger.warning("deployment %r failed unexpectedly: %s", deployment.name, type(exc).__name__)
            outcome = unforeseen
            breaker.failed(permit)
            return None, unforeseen, outcome_of(unforeseen)
        except BaseException as exc:
            outcome = exc
            breaker.released(permit)
            raise
        finally:
            deployment.in_flight -= 1
            if self.metrics is not None:
                self.metrics.observe_attempt(
                    deployment=deployment.name, outcome=outcome_of(outcome), seconds=time.perf_counter() - started
                )
        breaker.succeeded(permit)
        return result, None, "ok"

    def deadline_error(self, alias: AliasRuntime, last: ProviderError | None) -> ProviderTimeout:
        detail = f"; the last error: {last.message}" if last is not None else ""
        error = ProviderTimeout(
            f"model {alias.name!r} was not served within its {alias.config.timeout_s:g} s deadline{detail}"
        )
        error.__cause__ = last
        return error


class _BatchRouting:
    """The routing of one batch: its deployments in order, each tried up to ``1 + retries``
    times, every attempt written to the batch's trace."""

    def __init__(
        self,
        router: Router,
        alias: AliasRuntime,
        attempt: Attempt,
        *,
        pin: SpacePin | None,
        deadline: float,
        trace: BatchTrace,
    ) -> None:
        self.router = router
        self.alias = alias
        self.attempt = attempt
        self.pin = pin
        self.deadline = deadline
        self.trace = trace
        self.deployments_tried = 0
        self.last_error: ProviderError | None = None

    async def run(self) -> Routed:
        router, alias, pin = self.router, self.alias, self.pin
        skipped: list[DeploymentRuntime] = []
        deployments = alias.deployments
        for deployment in deployments if len(deployments) == 1 else router.order(alias, pin):
            if pin is not None and not pin.admits(deployment):
                continue
            permit = router.breaker_for(deployment).acquire() if deployment.health != "down" else None
            if permit is None:
                skipped.append(deployment)
                continue
            routed = await self._on_deployment(deployment, permit)
            if routed is not None:
                return routed
        candidates = [d for d in skipped if pin is None or pin.admits(d)]
        if self.deployments_tried:
            for deployment in candidates:
                breaker = router.breaker_for(deployment)
                if breaker.state != "open" and deployment.health != "down":  # being probed: the last resort
                    routed = await self._on_deployment(deployment, breaker.force(), forced=True)
                    if routed is not None:
                        return routed
        if self.last_error is not None:
            raise self.last_error
        if candidates:
            names = ", ".join(repr(d.name) for d in candidates)
            raise NoDeploymentAvailable(
                f"model {alias.name!r} cannot be served now: every deployment ({names}) is out of "
                "service (its circuit open after repeated failures, or its health probe failing); retry later",
                retry_after=self._retry_after(candidates),
            )
        raise NoDeploymentAvailable(f"model {alias.name!r} has no deployment available to serve it")

    def _retry_after(self, deployments: list[DeploymentRuntime]) -> float:
        """Seconds until the first of ``deployments`` may take a call again (at least 1)."""
        now = self.router.clock()
        return max(1.0, min(self.router.breaker_for(d).open_until - now for d in deployments))

    async def _on_deployment(self, deployment: DeploymentRuntime, permit: Permit, *, forced: bool = False) -> Routed | None:
        """Up to ``1 + retries`` attempts on one deployment; ``None`` means move on."""
        router, alias = self.router, self.alias
        breaker = router.breaker_for(deployment)
        if self.deployments_tried and router.metrics is not None:
            router.metrics.count_fallbacks(alias.name)
        fallbacks = self.deployments_tried
        self.deployments_tried += 1
        retry = 0
        while True:
            left = self.deadline - router.clock()
            if left <= 0:
                breaker.released(permit)
                raise router.deadline_error(alias, self.last_error)
            limit_s = min(deployment.config.timeout_s, left)
            try:
                result, error, outcome = await router.call(deployment, breaker, permit, self.attempt, limit_s)
            except BaseException as exc:
                self._note(deployment, outcome_of(exc))
                raise
            self._note(deployment, outcome)
            if error is None:
                assert result is not None
                pin = self.pin
                if pin is not None:
                    if pin.space is None:
                        pin.space = deployment.config.vector_space
                    elif not pin.admits(deployment):
                        return None
                return Routed(result, deployment, len(self.trace.attempts), fallbacks)
            self.last_error = error
            if not _retryable(error) or retry >= alias.config.retries:
                return None
            retry_after = getattr(error, "retry_after", None)
            wait = router.backoff.delay(retry, router.rng, retry_after=retry_after)
            if router.clock() + wait >= self.deadline:
                return None
            await router.sleep(wait)
            next_permit = breaker.force() if forced else breaker.acquire()
            if next_permit is None:
                return None
            permit = next_permit
            retry += 1
            if router.metrics is not None:
                router.metrics.count_retries(alias.name)

    def _note(self, deployment: DeploymentRuntime, outcome: str) -> None:
        self.trace.attempts.append(Attempted(deployment.name, deployment.config.provider, outcome))
