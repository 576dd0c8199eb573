"""The worker threads that run the model: a bulk lane at low CPU priority, a prompt lane at normal.

A small request that arrives while every worker is in the middle of another client's
large run would wait for one of those runs to end, and then share the CPU with the
others. A run cannot be pre-empted, and making every run short enough to wait behind
costs a large request much of its throughput (a run of 4 short inputs costs about 20%
more per input than a run of 32 on one onnxruntime thread). So the batcher keeps one
more worker than the bulk lane's, the prompt lane, for small requests only, and the
bulk lane's threads run at a lower priority (a higher ``nice``): when the prompt lane
(or the event loop) wants a core, the kernel hands it over within a scheduling tick
instead of splitting it evenly; when nothing else wants the cores, a bulk run has
them all, so a lone large request loses nothing.

Lowering a thread's own priority needs no privilege. It is per thread on Linux only
(elsewhere ``setpriority`` would act on a process), so elsewhere the bulk lane runs at
normal priority. Threads that onnxruntime starts itself (``threads`` > 1) keep the
priority of the thread that loaded the model.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from dataclasses import dataclass

__all__ = ["BULK_NICE", "Lane", "lower_this_thread", "thread_nice"]

#: How much lower a bulk thread's priority is: at nice 10 a thread gets about a tenth of a
#: core that a normal-priority thread also wants.
BULK_NICE = 10


def lower_this_thread(nice: int) -> None:
    """Add ``nice`` to the calling thread's nice value (Linux; a no-op elsewhere or if refused)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # a sandbox that forbids it: run at normal priority
        pass


def thread_nice() -> int | None:
    """The calling thread's nice value (Linux), for tests and metrics."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@dataclass(eq=False)
class Lane:
    """A pool of model workers and how many of them are free."""

    name: str
    workers: int
    nice: int = 0

    def __post_init__(self) -> None:
        self.idle = self.workers
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers,
            thread_name_prefix=f"onnx-{self.name}",
            initializer=lower_this_thread,
            initargs=(self.nice,),
        )

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
