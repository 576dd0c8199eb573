"""Splitting a request into batches every deployment accepts, and merging the answers.

Batches keep input order; results are merged back by position, so the response lists
vectors exactly as the inputs came. One failed batch fails the whole request: a client
never gets a partial answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, TypeVar

import numpy as np

from providers.base import EmbeddingResult

__all__ = ["Batch", "merge_results", "run_batches", "split_batches"]

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    start: int
    stop: int


def split_batches(token_counts: Sequence[int], *, max_inputs: int, max_tokens: int) -> list[Batch]:
    """Consecutive runs of at most ``max_inputs`` items and ``max_tokens`` tokens.

    An item larger than ``max_tokens`` on its own gets a batch of its own (the backend
    will judge it).
    """
    batches: list[Batch] = []
    start, tokens = 0, 0
    for index, count in enumerate(token_counts):
        if index > start and (index - start >= max_inputs or tokens + count > max_tokens):
            batches.append(Batch(start, index))
            start, tokens = index, 0
        tokens += count
    if start < len(token_counts):
        batches.append(Batch(start, len(token_counts)))
    return batches


async def run_batches(
    batches: Sequence[Batch], call: Callable[[Batch], Awaitable[T]], *, concurrency: int
) -> list[T]:
    """Run every batch with at most ``concurrency`` in flight; the first failure cancels the rest."""
    if len(batches) == 1:
        return [await call(batches[0])]
    slots = asyncio.Semaphore(concurrency)

    async def limited(batch: Batch) -> T:
        async with slots:
            return await call(batch)

    tasks = [asyncio.create_task(limited(batch)) for batch in batches]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def merge_results(results: Sequence[EmbeddingResult]) -> EmbeddingResult:
    if len(results) == 1:
        return results[0]
    first = results[0]
    costs = [r.cost_usd for r in results]
    return EmbeddingResult(
        vectors=np.concatenate([r.vectors for r in results], axis=0),
        token_counts=[c for r in results for c in r.token_counts],
        encoding=first.encoding,
        dimensions=first.dimensions,
        prompt_tokens=sum(r.prompt_tokens or 0 for r in results),
        tokens_estimated=any(r.tokens_estimated for r in results),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
        normalized=all(r.normalized for r in results),
    )
