"""The circuit breaker on its own, driven by a fake clock."""

from __future__ import annotations

import random

from gateway.routing.backoff import Backoff
from gateway.routing.breaker import Breaker, BreakerSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, cooldown_s: float = 10.0) -> tuple[Breaker, FakeClock, list[str]]:
    clock = FakeClock()
    changes: list[str] = []
    breaker = Breaker(
        "primary",
        BreakerSettings(failures=failures, cooldown_s=cooldown_s),
        clock=clock,
        on_change=lambda name, state: changes.append(f"{name}:{state}"),
    )
    return breaker, clock, changes


def state(breaker: Breaker) -> str:
    """Read through a function, so mypy does not narrow the property between reads."""
    return breaker.state


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.failed(permit)


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, changes = make(failures=3)
    fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.succeeded(permit)  # a success resets the count
    fail(breaker, 2)
    assert state(breaker) == "closed" and breaker.failures == 2
    fail(breaker, 1)
    assert state(breaker) == "open"
    assert changes == ["primary:open"]


def test_open_keeps_calls_out_until_the_cooldown_ends() -> None:
    breaker, clock, _ = make(failures=1, cooldown_s=10)
    fail(breaker, 1)
    assert breaker.acquire() is None and not breaker.available()
    assert breaker.open_until == clock.now + 10
    clock.now += 9.9
    assert breaker.acquire() is None
    clock.now += 0.1
    assert state(breaker) == "half-open" and breaker.available()


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    breaker, clock, changes = make(failures=1, cooldown_s=5)
    fail(breaker, 1)
    clock.now += 5
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    assert breaker.acquire() is None  # others wait while the probe is out
    assert not breaker.available()
    breaker.succeeded(probe)
    assert state(breaker) == "closed"
    assert breaker.acquire() is not None
    assert changes == ["primary:open", "primary:half-open", "primary:closed"]


def test_a_failed_probe_reopens_for_a_new_cooldown() -> None:
    breaker, clock, changes = make(failures=2, cooldown_s=5)
    fail(breaker, 2)
    clock.now += 5
    probe = breaker.acquire()
    assert probe is not None
    breaker.failed(probe)
    assert state(breaker) == "open" and breaker.open_until == clock.now + 5
    clock.now += 4
    assert breaker.acquire() is None
    clock.now += 1
    assert breaker.acquire() is not None
    assert changes == ["primary:open", "primary:half-open", "primary:open", "primary:half-open"]


def test_a_probe_without_verdict_frees_the_slot() -> None:
    breaker, clock, _ = make(failures=1, cooldown_s=1)
    fail(breaker, 1)
    clock.now += 1
    probe = breaker.acquire()
    assert probe is not None
    breaker.released(probe)  # e.g. the caller was cancelled
    assert state(breaker) == "half-open"
    assert breaker.acquire() is not None


def test_late_failures_do_not_extend_the_cooldown() -> None:
    breaker, clock, _ = make(failures=1, cooldown_s=10)
    early = breaker.acquire()
    assert early is not None
    fail(breaker, 1)
    until = breaker.open_until
    clock.now += 3
    breaker.failed(early)  # a call let through before the breaker opened
    assert breaker.open_until == until


def test_force_and_any_success_close() -> None:
    breaker, _, _ = make(failures=1)
    fail(breaker, 1)
    permit = breaker.force()
    assert not permit.probe
    breaker.failed(permit)  # a forced call failing while open changes nothing
    assert state(breaker) == "open"
    breaker.succeeded(breaker.force())
    assert state(breaker) == "closed"


def test_zero_failures_never_opens() -> None:
    breaker, _, _ = make(failures=0)
    fail(breaker, 50)
    assert state(breaker) == "closed"


def test_backoff_full_jitter_stays_under_its_ceiling() -> None:
    backoff = Backoff(base_s=0.05, cap_s=2.0)
    assert [backoff.ceiling(n) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    rng = random.Random(3)
    waits = [backoff.delay(2, rng) for _ in range(200)]
    assert all(0 <= w <= 0.2 for w in waits) and max(waits) > 0.15 and min(waits) < 0.05
    assert backoff.delay(0, rng, retry_after=1.5) == 1.5
