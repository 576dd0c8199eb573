"""A circuit breaker per deployment: stop sending to a deployment that keeps failing.

States::

    closed ──N consecutive failures──▶ open ──cooldown over──▶ half-open
      ▲                                 ▲                          │
      └──────────── probe succeeds ─────┼──────────────────────────┤
                                        └────── probe fails ───────┘

Closed lets every call through. Open lets none through until its cooldown is over; then
the breaker is half-open and lets exactly one call through (the probe) while the others
are kept out. Any success closes the breaker. Only availability failures count (the
router decides which; a bad input proves nothing about the deployment).

Each call holds a :class:`Permit` from :meth:`Breaker.acquire` (or :meth:`Breaker.force`)
and hands it back with :meth:`Breaker.succeeded`, :meth:`Breaker.failed` or
:meth:`Breaker.released` (no verdict: cancelled, or a bad input).

With shared state, another process's verdict arrives through :meth:`Breaker.open_elsewhere`
and :meth:`Breaker.close_elsewhere` (:mod:`gateway.state.circuits`); ``opened_elsewhere``
tells the publisher not to echo a transition it did not cause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

from gateway.config import DEFAULT_BREAKER_COOLDOWN_S, DEFAULT_BREAKER_FAILURES

__all__ = [
    "Breaker",
    "BreakerSettings",
    "BreakerState",
    "Permit",
]


BreakerState = Literal["closed", "open", "half-open"]
Clock = Callable[[], float]
OnChange = Callable[[str, BreakerState], None]


@dataclass(frozen=True, kw_only=True)
class BreakerSettings:
    """``failures`` consecutive failures open the breaker (0: never) for ``cooldown_s``."""

    failures: int = DEFAULT_BREAKER_FAILURES
    cooldown_s: float = DEFAULT_BREAKER_COOLDOWN_S


@dataclass(eq=False, slots=True)
class Permit:
    """Leave to make one call; ``probe`` marks the half-open breaker's single trial."""

    probe: bool = False


_NORMAL = Permit()


class Breaker:
    def __init__(
        self,
        name: str,
        settings: BreakerSettings = BreakerSettings(),
        *,
        clock: Clock = time.monotonic,
        on_change: OnChange | None = None,
    ) -> None:
        """``name`` is the deployment's; ``on_change(name, state)`` is called on every transition."""
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_until = 0.0
        self._probe: Permit | None = None
        self._elsewhere = False

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, state={self.state!r}, failures={self._failures})"

    @property
    def state(self) -> BreakerState:
        self._tick()
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    @property
    def open_until(self) -> float:
        """Clock time the cooldown ends (in the past unless the breaker is open)."""
        return self._opened_until

    @property
    def opened_elsewhere(self) -> bool:
        """The current open (or half-open) state came from another process, not from here."""
        return self._elsewhere

    def open_elsewhere(self, seconds: float) -> None:
        """Another process opened this deployment's circuit: keep calls out for ``seconds``."""
        if self._state == "open" and not self._elsewhere:
            return
        self._failures = 0
        self._probe = None
        self._opened_until = self._clock() + seconds
        self._elsewhere = True
        self._set("open")

    def close_elsewhere(self) -> None:
        """Another process saw the deployment recover before this breaker's cooldown ended."""
        if self._elsewhere and self._state != "closed":
            self._probe = None
            self._failures = 0
            self._set("closed")
        self._elsewhere = False

    def available(self) -> bool:
        """Whether :meth:`acquire` would let a call through now (without taking a permit)."""
        state = self.state
        return state == "closed" or (state == "half-open" and self._probe is None)

    def acquire(self) -> Permit | None:
        """A permit to call the deployment, or ``None`` while the breaker keeps calls out."""
        if self._state == "closed":
            return _NORMAL
        state = self.state
        if state == "closed":
            return _NORMAL
        if state == "half-open" and self._probe is None:
            self._probe = Permit(probe=True)
            return self._probe
        return None

    def force(self) -> Permit:
        """A permit whatever the state: for a last resort (the router says when)."""
        return self.acquire() or _NORMAL

    def succeeded(self, permit: Permit) -> None:
        # Any success is evidence enough; an outstanding probe then counts as a plain call.
        self._probe = None
        self._failures = 0
        self._elsewhere = False
        if self._state != "closed":
            self._set("closed")

    def failed(self, permit: Permit) -> None:
        probe = self._end(permit)
        if probe:
            self._open()
        elif self._state == "closed":
            # Failures of calls let through before the breaker opened do not extend its cooldown.
            self._failures += 1
            if self.settings.failures and self._failures >= self.settings.failures:
                self._open()

    def released(self, permit: Permit) -> None:
        """The call ended with no verdict on the deployment's health."""
        self._end(permit)

    def _end(self, permit: Permit) -> bool:
        if permit is self._probe:
            self._probe = None
            return True
        return False

    def _open(self) -> None:
        self._elsewhere = False
        self._failures = 0
        self._opened_until = self._clock() + self.settings.cooldown_s
        self._set("open")

    def _tick(self) -> None:
        if self._state == "open" and self._clock() >= self._opened_until:
            self._set("half-open")

    def _set(self, state: BreakerState) -> None:
        if state == self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)
