"""A queue between callers and a model: concurrent requests are run together.

Callers ``submit`` token sequences and await their rows. One background task gathers
queued sequences (up to ``max_batch_size`` / ``max_batch_tokens``, waiting at most
``max_wait_ms`` for a batch to fill), sorts them by length, cuts them into sub-batches
that waste little padding and runs those in worker threads; each caller's future is
resolved as soon as its last row is done.

Scheduled by size: a batch is filled from the request with the fewest sequences left
first (shortest remaining work first; arrival order among equals), so a request of one
input is in the next batch even behind another client's thousand, and of several large
requests each finishes in turn instead of all at the end (round-robin would hold every
one of them until the last). A large request still gets every place that smaller ones
leave in a batch; only a stream of small requests filling every batch would hold it.
A caller who leaves (its task cancelled, e.g. the client hung up) is taken out of the
queue at once, and its sequences still in a later sub-batch are not run.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import numpy.typing as npt

from providers.base import ProviderOverloaded

__all__ = ["BatchStats", "MicroBatcher", "RunBatch"]

#: Runs the model on sequences of token ids and returns one float32 row per sequence.
RunBatch = Callable[[list[npt.NDArray[np.int64]]], npt.NDArray[np.float32]]


@dataclass(eq=False)
class _Job:
    sequences: list[npt.NDArray[np.int64]]
    future: asyncio.Future[npt.NDArray[np.float32]]
    rows: npt.NDArray[np.float32] | None = None
    pending: int = 0
    #: The next position to hand to a batch; ``len(sequences)`` once all are handed out.
    cursor: int = 0

    @property
    def unqueued(self) -> int:
        return len(self.sequences) - self.cursor


@dataclass
class BatchStats:
    """Counters for metrics: what the batcher has run so far."""

    batches: int = 0
    sequences: int = 0
    padded_tokens: int = 0
    real_tokens: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class MicroBatcher:
    """Dynamic batching in front of a blocking model function."""

    def __init__(
        self,
        run: RunBatch,
        *,
        dimensions: int,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 2.0,
        max_queue: int = 8192,
        workers: int = 1,
        max_padding: float = 0.02,
    ) -> None:
        self._run = run
        self._dimensions = dimensions
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._max_padding = max_padding
        self._workers = workers
        #: Requests with sequences not yet in a batch, in arrival order.
        self._jobs: list[_Job] = []
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._idle_workers = workers
        self._inflight: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()
        #: Called on the event loop with each model run's size (for metrics).
        self.on_batch: Callable[[int], None] | None = None

    @property
    def queue_depth(self) -> int:
        return self._queued

    async def start(self) -> None:
        if self._task is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._workers, thread_name_prefix="onnx-run"
        )
        self._slots = asyncio.Semaphore(self._workers)
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        while self._jobs:
            await asyncio.sleep(0.005)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, sequences: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        if self._task is None:
            raise RuntimeError("MicroBatcher.submit() before start()")
        if not sequences:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        if self._queued + len(sequences) > self.max_queue:
            raise ProviderOverloaded(
                f"the local model's queue is full ({self._queued} inputs waiting, "
                f"at most {self.max_queue}); retry shortly",
                retry_after=1.0,
            )
        job = _Job(sequences, asyncio.get_running_loop().create_future(), pending=len(sequences))
        self._jobs.append(job)
        self._queued += len(sequences)
        job.future.add_done_callback(lambda _: self._forget(job))
        self._wakeup.set()
        return await job.future

    def _forget(self, job: _Job) -> None:
        """A finished or abandoned request leaves the queue with what it had left in it."""
        if job.unqueued:
            self._queued -= job.unqueued
            job.cursor = len(job.sequences)
            try:
                self._jobs.remove(job)
            except ValueError:
                pass

    async def _loop(self) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            self._idle_workers -= 1
            await self._gather_window(loop)
            batch = self._take_batch()
            if not batch:
                self._idle_workers += 1
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _gather_window(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch fill for up to ``max_wait_s`` unless it is already full."""
        deadline = loop.time() + self.max_wait_s
        while self._queued < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[tuple[_Job, int]]:
        """Sequences of the requests with the least left first; with idle workers, a fair
        share of what is queued so all get work."""
        share = -(-self._queued // (self._idle_workers + 1))
        limit = max(1, min(self.max_batch_size, share))
        batch: list[tuple[_Job, int]] = []
        tokens = 0
        for job in sorted(self._jobs, key=lambda j: j.unqueued):  # stable: arrival order among equals
            while job.unqueued and len(batch) < limit:
                position = job.cursor
                length = len(job.sequences[position])
                if batch and tokens + length > self.max_batch_tokens:
                    break
                job.cursor += 1
                self._queued -= 1
                batch.append((job, position))
                tokens += length
            if not job.unqueued:
                self._jobs.remove(job)
            if len(batch) >= limit or (batch and tokens >= self.max_batch_tokens):
                break
        return batch

    def _sub_batches(self, batch: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
        """Sorted by length, cut where padding to the longest would waste over ``max_padding``.

        On CPU a padded token costs as much as a real one and small runs cost little more
        per token than large ones, so nearly-equal lengths per run beat large batches
        (bench/local.py measured it)."""
        ordered = sorted(batch, key=lambda item: len(item[0].sequences[item[1]]))
        groups: list[list[tuple[_Job, int]]] = []
        current: list[tuple[_Job, int]] = []
        real = 0
        for item in ordered:
            length = len(item[0].sequences[item[1]])
            padded = length * (len(current) + 1)
            if current and (real + length) < (1.0 - self._max_padding) * padded:
                groups.append(current)
                current, real = [], 0
            current.append(item)
            real += length
        if current:
            groups.append(current)
        return groups

    async def _run_batch(self, batch: list[tuple[_Job, int]]) -> None:
        assert self._slots is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            for group in self._sub_batches(batch):
                group = [(job, position) for job, position in group if not job.future.done()]
                if not group:
                    continue
                sequences = [job.sequences[position] for job, position in group]
                try:
                    rows = await loop.run_in_executor(self._executor, self._run, sequences)
                except Exception as exc:  # the model failed: every caller in the group hears it
                    for job, _ in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self._record(sequences)
                for (job, position), row in zip(group, rows):
                    self._deliver(job, position, row)
        finally:
            self._idle_workers += 1
            self._slots.release()

    def _deliver(self, job: _Job, position: int, row: npt.NDArray[np.float32]) -> None:
        if job.future.done():
            return
        if job.rows is None:
            job.rows = np.empty((len(job.sequences), row.shape[0]), dtype=np.float32)
        job.rows[position] = row
        job.pending -= 1
        if job.pending == 0:
            job.future.set_result(job.rows)

    def _record(self, sequences: list[npt.NDArray[np.int64]]) -> None:
        longest = max(len(s) for s in sequences)
        self.stats.batches += 1
        self.stats.sequences += len(sequences)
        self.stats.padded_tokens += longest * len(sequences)
        self.stats.real_tokens += sum(len(s) for s in sequences)
        self.stats.batch_sizes[len(sequences)] += 1
        if self.on_batch is not None:
            self.on_batch(len(sequences))
