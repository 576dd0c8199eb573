"""The micro-batcher on its own, driving a real (cheap) model function."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import numpy as np
import pytest

from providers.base import ProviderOverloaded
from providers.local.lanes import thread_nice
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


def test_a_small_request_is_not_held_behind_a_large_one() -> None:
    """Round-robin by request: one input submitted after 1,000 others is run in the next batch."""
    ran: list[int] = []  # first value of each sequence, in the order the model saw them

    def recording(sequences: list[np.ndarray]) -> np.ndarray:
        ran.extend(int(s[0]) for s in sequences)
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(recording, dimensions=2, max_batch_size=8, max_wait_ms=0, workers=1)
        await batcher.start()
        large = asyncio.create_task(batcher.submit([seq(1000 + i) for i in range(1000)]))
        await asyncio.sleep(0)
        small = asyncio.create_task(batcher.submit([seq(7)]))
        rows = await small
        assert not large.done()  # the small one finished while the large one was still running
        assert rows[0][0] == 7
        assert len(await large) == 1000
        await batcher.stop()

    asyncio.run(main())
    assert ran.index(7) < 2 * 8  # within the first two batches, not after a thousand inputs


def test_a_caller_who_leaves_has_its_queued_work_dropped() -> None:
    gate, entered = threading.Event(), threading.Event()
    ran: list[int] = []

    def slow(sequences: list[np.ndarray]) -> np.ndarray:
        entered.set()
        gate.wait(10)
        ran.extend(int(s[0]) for s in sequences)
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(slow, dimensions=2, max_batch_size=4, max_wait_ms=0, workers=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit([seq(1)]))
        await asyncio.to_thread(entered.wait, 10)
        gone = asyncio.create_task(batcher.submit([seq(500 + i) for i in range(100)]))
        await asyncio.sleep(0)
        assert batcher.queue_depth == 100
        gone.cancel()
        await asyncio.sleep(0)
        assert batcher.queue_depth == 0  # out of the queue at once, not when its turn comes
        gate.set()
        await first
        await batcher.stop()

    asyncio.run(main())
    assert ran == [1]


def test_of_two_large_requests_the_first_finishes_first() -> None:
    """By size, not round-robin: equal requests are served in turn, not all at the end."""
    finished: list[str] = []

    async def main() -> None:
        batcher = MicroBatcher(run, dimensions=2, max_batch_size=4, max_wait_ms=0, workers=1)
        await batcher.start()

        async def request(name: str) -> None:
            await batcher.submit([seq(i) for i in range(40)])
            finished.append(name)

        first = asyncio.create_task(request("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(request("second"))
        await first
        assert not second.done()  # the second still had work queued when the first was done
        await second
        await batcher.stop()

    asyncio.run(main())
    assert finished == ["first", "second"]


def test_a_small_request_is_served_while_a_large_one_holds_every_bulk_worker() -> None:
    """The prompt lane: with both bulk workers inside runs of a large request (held there),
    a one-input request is still answered, by the prompt thread."""
    gate = threading.Event()
    entered = threading.Semaphore(0)
    threads: dict[int, str] = {}

    def held(sequences: list[np.ndarray]) -> np.ndarray:
        name = threading.current_thread().name
        for s in sequences:
            threads[int(s[0])] = name
        if name.startswith("onnx-run"):
            entered.release()
            gate.wait(10)
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(held, dimensions=2, max_batch_size=4, max_wait_ms=0, workers=2)
        await batcher.start()
        large = asyncio.create_task(batcher.submit([seq(1000 + i, *range(19)) for i in range(40)]))  # 800 tokens
        for _ in range(2):  # both bulk workers are inside a run of the large request
            await asyncio.to_thread(entered.acquire, True, 10)
        rows = await batcher.submit([seq(7)])
        assert rows[0][0] == 7
        assert not gate.is_set() and not large.done()
        gate.set()
        assert len(await large) == 40
        await batcher.stop()
        assert batcher.stats.prompt_batches >= 1

    asyncio.run(main())
    assert threads[7].startswith("onnx-prompt")
    assert all(threads[1000 + i].startswith("onnx-run") for i in range(40))  # never on the prompt lane


def test_bulk_workers_run_at_a_lower_priority_than_the_prompt_worker() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("thread priorities are per thread on Linux only")
    seen: dict[str, int | None] = {}

    def recording(sequences: list[np.ndarray]) -> np.ndarray:
        seen[threading.current_thread().name.split("_")[0]] = thread_nice()
        return run(sequences)

    async def main() -> None:
        batcher = MicroBatcher(recording, dimensions=2, max_batch_size=4, max_wait_ms=0, workers=1, bulk_nice=5)
        await batcher.start()
        await batcher.submit([seq(i, *range(20)) for i in range(64)])  # over prompt_tokens: bulk only
        await batcher.submit([seq(1)])  # small: the prompt lane is free, so it takes it
        await batcher.stop()

    ours = thread_nice()
    assert ours is not None
    asyncio.run(main())
    assert seen["onnx-prompt"] == ours
    assert seen["onnx-run"] == min(19, ours + 5)


def test_memory_is_released_once_the_queue_has_drained() -> None:
    """``on_idle`` runs after the work, in a worker, once; not again until more work ran."""
    events: list[str] = []
    released = threading.Event()

    def recording(sequences: list[np.ndarray]) -> np.ndarray:
        events.append("run")
        return run(sequences)

    def on_idle() -> None:
        events.append(f"release in {threading.current_thread().name.split('_')[0]}")
        released.set()

    async def main() -> None:
        batcher = MicroBatcher(recording, dimensions=2, max_wait_ms=0, on_idle=on_idle, idle_s=0.01)
        await batcher.start()
        await batcher.submit([seq(i) for i in range(100)])
        await asyncio.to_thread(released.wait, 10)
        released.clear()
        await batcher.submit([seq(1)])
        await asyncio.to_thread(released.wait, 10)
        await batcher.stop()

    asyncio.run(main())
    first = events.index("release in onnx-run")
    assert set(events[:first]) == {"run"} and first >= 1
    assert events[first + 1:] == ["run", "release in onnx-run"]


def test_the_real_model_releases_its_arena_and_still_embeds_the_same() -> None:
    from providers.local.bundled import resolve_bundled
    from providers.local.onnx import OnnxEmbedder

    _, model, tokenizer = resolve_bundled("all-MiniLM-L6-v2")
    embedder = OnnxEmbedder(model, tokenizer, threads=1)
    sequences = [embedder.frame(ids) for ids in embedder.tokenize(["a text " * 40, "another"])]
    before = embedder.run(sequences)
    embedder.release_memory()
    assert np.allclose(embedder.run(sequences), before, atol=1e-6)


def test_a_request_cancelled_while_tokenized_stops_at_the_next_chunk() -> None:
    """A large request is tokenized in chunks in worker threads: once its caller is gone
    (cancelled, as when the client hangs up) no further chunk is tokenized or run."""
    from providers.base import DeploymentSpec, EmbedOptions
    from providers.local.onnx import OnnxProvider

    chunks: list[int] = []
    inside, release = threading.Event(), threading.Event()

    async def main() -> None:
        provider = OnnxProvider(DeploymentSpec(name="mini", model="all-MiniLM-L6-v2"))
        await provider.start()
        embedder = provider._embedder
        assert embedder is not None and provider.batcher is not None
        tokenize = embedder.tokenize

        def held(texts: Any) -> list[list[int]]:  # the real tokenizer, held on its first chunk
            chunks.append(len(texts))
            inside.set()
            release.wait(10)
            return tokenize(texts)

        embedder.tokenize = held  # type: ignore[method-assign]
        task = asyncio.create_task(provider.embed([f"text {i}" for i in range(1000)], EmbedOptions()))
        await asyncio.to_thread(inside.wait, 10)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The coroutine that would tokenize the next chunk has ended: none can start now.
        assert provider.batcher.stats.sequences == 0 and provider.batcher.queue_depth == 0
        await provider.aclose()

    asyncio.run(main())
    assert len(chunks) == 1 and chunks[0] < 1000


def test_work_arriving_during_the_memory_release_is_batched_and_served() -> None:
    """The release holds a bulk worker like a run: work that comes meanwhile waits for it
    (small requests take the prompt lane) and is still cut into full batches."""
    gate, entered = threading.Event(), threading.Event()

    def on_idle() -> None:
        entered.set()
        gate.wait(10)

    async def main() -> None:
        batcher = MicroBatcher(
            run, dimensions=2, max_batch_size=8, max_wait_ms=0, workers=1, on_idle=on_idle, idle_s=0.01
        )
        await batcher.start()
        await batcher.submit([seq(1)])
        await asyncio.to_thread(entered.wait, 10)  # the release holds the only bulk worker
        before = batcher.stats.batches
        large = asyncio.create_task(batcher.submit([seq(i, *range(30)) for i in range(40)]))
        assert (await batcher.submit([seq(2)]))[0][0] == 2  # served by the prompt lane meanwhile
        assert not large.done()
        gate.set()
        assert len(await large) == 40
        await batcher.stop()
        assert batcher.stats.batches - before == 1 + 40 // 8  # the small one, then full batches

    asyncio.run(main())
