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

Two lanes of workers (:mod:`providers.local.lanes`): ``workers`` bulk threads at low CPU
priority take any request, and one prompt thread at normal priority takes only small
ones (at most ``prompt_tokens`` tokens in all), so a small request finds a worker free
and the CPU it needs even while another client's large request holds every bulk worker.

``on_idle`` (the model's memory release) runs in a bulk worker once nothing has been
queued or running for ``idle_s`` after work, so a burst's memory goes back to the system
without costing the burst itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import numpy.typing as npt

from providers.base import ProviderOverloaded
from providers.local.lanes import BULK_NICE, Lane

__all__ = ["BatchStats", "MicroBatcher", "RunBatch"]

logger = logging.getLogger("gateway.local")

#: Runs the model on sequences of token ids and returns one float32 row per sequence.
RunBatch = Callable[[list[npt.NDArray[np.int64]]], npt.NDArray[np.float32]]


@dataclass(eq=False)
class _Job:
    sequences: list[npt.NDArray[np.int64]]
    future: asyncio.Future[npt.NDArray[np.float32]]
    rows: npt.NDArray[np.float32] | None = None
    pending: int = 0
    #: Small enough for the prompt lane.
    prompt: bool = False
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
    #: Batches run by the prompt lane.
    prompt_batches: int = 0


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
        prompt_tokens: int = 512,
        bulk_nice: int = BULK_NICE,
        on_idle: Callable[[], None] | None = None,
        idle_s: float = 1.0,
    ) -> None:
        """``workers`` bulk threads run at ``bulk_nice``; with ``prompt_tokens`` > 0, one
        more thread at normal priority runs requests of at most that many tokens in all.
        ``on_idle`` is called in a worker thread once the batcher has been idle for
        ``idle_s`` after running anything."""
        self._run = run
        self._dimensions = dimensions
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.prompt_tokens = prompt_tokens
        self._max_padding = max_padding
        self._workers = workers
        self._bulk_nice = bulk_nice
        #: Requests with sequences not yet in a batch, in arrival order.
        self._jobs: list[_Job] = []
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bulk: Lane | None = None
        self._prompt: Lane | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._on_idle = on_idle
        self._idle_s = idle_s
        #: Work has run since ``on_idle`` was last called.
        self._worked = False
        self.stats = BatchStats()
        #: Called on the event loop with each model run's size (for metrics).
        self.on_batch: Callable[[int], None] | None = None

    @property
    def queue_depth(self) -> int:
        return self._queued

    async def start(self) -> None:
        if self._task is not None:
            return
        self._bulk = Lane("run", self._workers, self._bulk_nice)
        self._prompt = Lane("prompt", 1) if self.prompt_tokens > 0 else None
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
        for lane in (self._bulk, self._prompt):
            if lane is not None:
                lane.shutdown()
        self._bulk = self._prompt = None

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
        job.prompt = sum(len(s) for s in sequences) <= self.prompt_tokens
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
        loop = asyncio.get_running_loop()
        while True:
            if not self._runnable():
                self._wakeup.clear()
                if self._worked and self._on_idle is not None and not self._jobs and self._all_idle():
                    await self._idle(loop)
                else:
                    await self._wakeup.wait()
                continue
            await self._gather_window(loop)
            self._dispatch()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for work; after ``idle_s`` without any, start ``on_idle`` in a bulk worker
        (all are free), leaving the others and the prompt lane to whatever comes next."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), self._idle_s)
            return
        except TimeoutError:
            pass
        self._worked = False
        assert self._bulk is not None
        self._bulk.idle -= 1  # taken now, before anything else can be dispatched
        task = asyncio.create_task(self._release(loop))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._bulk is not None and self._on_idle is not None
        try:
            await loop.run_in_executor(self._bulk.executor, self._on_idle)
        except Exception as exc:  # releasing memory is a courtesy: never let it stop the batcher
            logger.warning("releasing the local model's memory failed: %s", type(exc).__name__)
        finally:
            self._bulk.idle += 1
            self._wakeup.set()

    def _all_idle(self) -> bool:
        return all(lane.idle == lane.workers for lane in (self._bulk, self._prompt) if lane is not None)

    def _runnable(self) -> bool:
        """Whether a free worker has something it may take."""
        assert self._bulk is not None
        if self._bulk.idle > 0 and self._jobs:
            return True
        return self._prompt is not None and self._prompt.idle > 0 and any(j.prompt for j in self._jobs)

    def _dispatch(self) -> None:
        """Hands work to every free worker that may take it: the prompt lane first (small
        requests only), then the bulk lane (anything, the least left first)."""
        assert self._bulk is not None
        prompt = self._prompt
        if prompt is not None and prompt.idle > 0 and any(j.prompt for j in self._jobs):
            self._start(prompt, self._take_batch(prompt_only=True, idle=0))
        while self._bulk.idle > 0 and self._jobs:
            self._start(self._bulk, self._take_batch(prompt_only=False, idle=self._bulk.idle - 1))

    def _start(self, lane: Lane, batch: list[tuple[_Job, int]]) -> None:
        if not batch:
            return
        lane.idle -= 1
        if lane is self._prompt:
            self.stats.prompt_batches += 1
        task = asyncio.create_task(self._run_batch(lane, batch))
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

    def _take_batch(self, *, prompt_only: bool, idle: int) -> list[tuple[_Job, int]]:
        """Sequences of the requests with the least left first; with ``idle`` other
        workers free, a fair share of what is queued so all get work. The prompt lane
        takes only small requests, at most ``prompt_tokens`` in a batch."""
        jobs = [j for j in self._jobs if j.prompt] if prompt_only else self._jobs
        queued = sum(j.unqueued for j in jobs) if prompt_only else self._queued
        share = -(-queued // (idle + 1))
        limit = max(1, min(self.max_batch_size, share))
        max_tokens = min(self.max_batch_tokens, self.prompt_tokens) if prompt_only else self.max_batch_tokens
        batch: list[tuple[_Job, int]] = []
        tokens = 0
        for job in sorted(jobs, key=lambda j: j.unqueued):  # stable: arrival order among equals
            while job.unqueued and len(batch) < limit:
                position = job.cursor
                length = len(job.sequences[position])
                if batch and tokens + length > max_tokens:
                    break
                job.cursor += 1
                self._queued -= 1
                batch.append((job, position))
                tokens += length
            if not job.unqueued:
                self._jobs.remove(job)
            if len(batch) >= limit or (batch and tokens >= max_tokens):
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

    async def _run_batch(self, lane: Lane, batch: list[tuple[_Job, int]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            for group in self._sub_batches(batch):
                group = [(job, position) for job, position in group if not job.future.done()]
                if not group:
                    continue
                sequences = [job.sequences[position] for job, position in group]
                try:
                    rows = await loop.run_in_executor(lane.executor, self._run, sequences)
                except Exception as exc:  # the model failed: every caller in the group hears it
                    for job, _ in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self._worked = True
                self._record(sequences)
                for (job, position), row in zip(group, rows):
                    self._deliver(job, position, row)
        finally:
            lane.idle += 1
            self._wakeup.set()

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
