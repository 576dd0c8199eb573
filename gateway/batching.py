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

__all__ = ["Batch", "Budget", "merge_results", "run_batches", "split_batches"]

T = TypeVar("T")


@dataclass(slots=True)
class Batch:
    start: int
    stop: int


@dataclass(slots=True)
class Budget:
    """One measure a batch must stay within: each item's cost and the batch's limit."""

    costs: Sequence[int]
    limit: int


def split_batches(count: int, *, max_items: int, budgets: Sequence[Budget] = ()) -> list[Batch]:
    """Consecutive runs of at most ``max_items`` items, each within every budget.

    An item over a budget on its own gets a batch of its own (the backend judges it).
    """
    if count <= max_items and not budgets:
        return [Batch(0, count)] if count else []
    batches: list[Batch] = []
    start = 0
    spent = [0] * len(budgets)
    for index in range(count):
        full = index - start >= max_items or any(
            spent[b] + budget.costs[index] > budget.limit for b, budget in enumerate(budgets)
        )
        if index > start and full:
            batches.append(Batch(start, index))
            start, spent = index, [0] * len(budgets)
        for b, budget in enumerate(budgets):
            spent[b] += budget.costs[index]
    if start < count:
        batches.append(Batch(start, count))
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
    )
