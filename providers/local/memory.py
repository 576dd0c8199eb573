"""Giving memory back to the system once a burst of work is over.

Two things keep a process's memory at its peak after large requests: onnxruntime's CPU
arena, which grows to the largest run's activations (batches of long texts take it to
gigabytes) and never shrinks on its own, and glibc's heap, which keeps what Python,
numpy and the tokenizer freed (a 10 MB request body, a thousand rows) for reuse instead of
returning it. Turning the arena off returns everything but costs a third of the
throughput on long texts (each run's buffers are page-faulted anew), so the arena is
kept while work flows and emptied when the queue has drained: one tiny run with the
arena-shrinkage run option frees its unused chunks, then ``malloc_trim(0)`` returns the
heap's free pages. bench/hostile.py prints the server's RSS before and after.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

__all__ = ["SHRINK_ARENA", "trim_heap"]

#: The run option that frees an onnxruntime arena's unused chunks when the run ends.
SHRINK_ARENA = ("memory.enable_memory_arena_shrinkage", "cpu:0")


@cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc only: musl has none
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the C heap's free pages to the system (glibc); whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
