"""The micro-batcher on its own, driving a real (cheap) model function."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from providers.base import ProviderOverloaded
from providers.local.microbatch import MicroBatcher


def row_of(sequence: np.ndarray) -> np.ndarray:
    return np.array([float(sequence.sum()), float(len(sequence))], dtype=np.float32)


def run(sequences: list[np.ndarray]) -> np.ndarray:
    return np.stack([row_of(s) for s in sequences])


def seq(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_rows_come_back_in_order_and_batched() -> None:
    async def main() -> None:
        batcher = MicroBatcher(run, dimensions=2, max_batch_size=8, max_wait_ms=20)
        await batcher.start()
        jobs = [[seq(i, *range(i % 5)), seq(100 + i)] for i in range(20)]
        results = await asyncio.gather(*[batcher.submit(job) for job in jobs])
        await batcher.stop()
        for job, rows in zip(jobs, results):
            assert np.array_equal(rows, run(job))
        assert batcher.stats.sequences == 40
        assert batcher.stats.batches < 40  # callers were really batched together

    asyncio.run(main())


def test_queue_bound_raises_overloaded() -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow(sequences: list[np.ndarray]) -> np.ndarray:
        entered.set()
        gate.wait(10)
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(slow, dimensions=2, max_batch_size=2, max_queue=4, max_wait_ms=0)
        await batcher.start()
        first = asyncio.create_task(batcher.submit([seq(1), seq(2)]))
        await asyncio.to_thread(entered.wait, 10)  # the first batch is in the worker thread
        waiting = asyncio.create_task(batcher.submit([seq(3), seq(4), seq(5), seq(6)]))
        await asyncio.sleep(0)
        with pytest.raises(ProviderOverloaded):
            await batcher.submit([seq(7)])
        gate.set()
        assert (await first).shape == (2, 2)
        assert (await waiting).shape == (4, 2)
        await batcher.stop()

    asyncio.run(main())


def test_cancelled_callers_are_skipped_and_errors_reach_callers() -> None:
    calls: list[int] = []

    def failing(sequences: list[np.ndarray]) -> np.ndarray:
        calls.append(len(sequences))
        if any(int(s[0]) == 13 for s in sequences):
            raise RuntimeError("model exploded")
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(failing, dimensions=2, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        doomed = asyncio.create_task(batcher.submit([seq(13)]))
        fine = asyncio.create_task(batcher.submit([seq(1)]))
        with pytest.raises(RuntimeError):
            await doomed
        assert (await fine).shape == (1, 2)
        gone = asyncio.create_task(batcher.submit([seq(5)] * 3))
        await asyncio.sleep(0)
        gone.cancel()
        await batcher.stop()

    asyncio.run(main())
