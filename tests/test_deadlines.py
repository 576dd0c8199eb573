"""The shared-timer time limits that bound each upstream call."""

from __future__ import annotations

import asyncio

import pytest

from gateway.routing.deadlines import DeadlineWatch


def test_a_call_past_its_limit_gets_timeout_error() -> None:
    async def main() -> None:
        watch = DeadlineWatch(resolution_s=0.005)
        with pytest.raises(TimeoutError):
            with watch.limit(0.02):
                await asyncio.sleep(5)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_call_within_its_limit_is_untouched_and_the_timer_stops() -> None:
    async def main() -> None:
        watch = DeadlineWatch(resolution_s=0.005)
        with watch.limit(1.0):
            await asyncio.sleep(0.01)
        assert not watch._watched
        for _ in range(200):  # the timer's next check finds nothing and stops re-arming
            if watch._timer is None:
                break
            await asyncio.sleep(watch.resolution_s)
        assert watch._timer is None
        await asyncio.sleep(0.01)  # nothing cancels the task later on

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def guarded(watch: DeadlineWatch, started: asyncio.Event) -> None:
        with watch.limit(5.0):
            started.set()
            await asyncio.sleep(5)

    async def main() -> None:
        watch = DeadlineWatch(resolution_s=0.005)
        started = asyncio.Event()
        task = asyncio.create_task(guarded(watch, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_wins_over_an_expired_limit() -> None:
    async def guarded(watch: DeadlineWatch, started: asyncio.Event) -> None:
        with watch.limit(0.01):
            started.set()
            try:
                await asyncio.sleep(5)
            finally:
                await asyncio.sleep(0.05)  # the limit expires while the outer cancel is handled

    async def main() -> None:
        watch = DeadlineWatch(resolution_s=0.005)
        started = asyncio.Event()
        task = asyncio.create_task(guarded(watch, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_concurrent_calls_each_get_their_own_limit() -> None:
    async def call(watch: DeadlineWatch, limit_s: float, takes_s: float) -> str:
        try:
            with watch.limit(limit_s):
                await asyncio.sleep(takes_s)
        except TimeoutError:
            return "timeout"
        return "ok"

    async def main() -> list[str]:
        watch = DeadlineWatch(resolution_s=0.005)
        return await asyncio.gather(
            call(watch, 0.02, 1.0), call(watch, 1.0, 0.03), call(watch, 0.05, 1.0), call(watch, 1.0, 0.0)
        )

    assert asyncio.run(main()) == ["timeout", "ok", "timeout", "ok"]


def test_a_watch_moves_to_a_new_event_loop() -> None:
    watch = DeadlineWatch(resolution_s=0.005)

    async def quick() -> None:
        with watch.limit(1.0):
            await asyncio.sleep(0)

    async def hang() -> str:
        try:
            with watch.limit(0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            return "limited"
        return "not limited"

    asyncio.run(quick())  # leaves its timer behind on a loop that is now closed
    assert watch._timer is not None
    assert asyncio.run(asyncio.wait_for(hang(), timeout=2)) == "limited"
