"""The shortcuts that need an event loop, loopback HTTP, SQLite or the local model, each
against the plain way (see bench/shortcuts.py). Everything runs on one uvloop loop, as
``serve`` runs; the fake OpenAI upstream is a subprocess on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import httpx
import numpy as np
import orjson
import uvloop
from httpx_aiohttp import AiohttpTransport

from bench.harness import fake_openai_upstream
from bench.shortcut_cases import BODY, TEXT
from bench.shortcuts import Case, Run
from gateway.app import create_app
from gateway.batching import Batch, merge_results, run_batches
from gateway.config.settings import parse_config
from gateway.routing.deadlines import DeadlineWatch
from gateway.routing.router import Router
from gateway.runtime import build_runtime
from gateway.service import EmbeddingService
from gateway.usage.ledger import UsageLedger, UsageRecord
from gateway.usage.sqlite import SqliteStore
from providers.base import EmbeddingResult
from providers.upstream.client import DEFAULT_MAX_CONNECTIONS, KEEPALIVE_EXPIRY_S, UpstreamClient

__all__ = ["cases"]

CONCURRENCY = 32
T = TypeVar("T")


def _on(loop: asyncio.AbstractEventLoop, work: Callable[[int], Awaitable[None]]) -> Run:
    def run(n: int) -> float:
        started = time.perf_counter()
        loop.run_until_complete(work(n))
        return time.perf_counter() - started

    return run


def _spread(call: Callable[[], Awaitable[object]], concurrency: int = CONCURRENCY) -> Callable[[int], Awaitable[None]]:
    """``n`` calls of ``call`` by ``concurrency`` tasks at once."""
    async def work(n: int) -> None:
        turns = iter(range(n))

        async def worker() -> None:
            for _ in turns:
                await call()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return work


def deadline_case(loop: asyncio.AbstractEventLoop) -> Case:
    watch = DeadlineWatch()

    async def shared_timer() -> None:
        with watch.limit(30.0):
            await asyncio.sleep(0)

    async def timer_per_call() -> None:
        async with asyncio.timeout(30.0):
            await asyncio.sleep(0)

    return Case("shared deadline timer", "gateway/routing/deadlines.py DeadlineWatch.limit",
                _on(loop, _spread(timer_per_call)), _on(loop, _spread(shared_timer)), "guarded call")


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS, max_keepalive_connections=DEFAULT_MAX_CONNECTIONS,
                        keepalive_expiry=KEEPALIVE_EXPIRY_S)


class _HttpxPool(httpx.AsyncHTTPTransport):
    """httpx's own pool, given the two headers ``post_json`` leaves to aiohttp (as
    ``httpx.Request`` would have set them had the body not come as a stream)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["host"] = request.url.netloc.decode("ascii")
        request.headers["content-length"] = str(len(request.content))
        return await super().handle_async_request(request)


def upstream_cases(loop: asyncio.AbstractEventLoop, base_url: str, stack: contextlib.ExitStack) -> list[Case]:
    def client(transport: httpx.AsyncBaseTransport | None) -> UpstreamClient:
        made = UpstreamClient(deployment="one", base_url=base_url, api_key="sk-bench", headers={}, timeout_s=30.0,
                              connect_timeout_s=5.0, transport=transport)
        loop.run_until_complete(made.start())
        stack.callback(lambda: loop.run_until_complete(made.aclose()))
        return made

    ours = client(None)  # start() builds the aiohttp pool, as served
    plain_pool = _HttpxPool(limits=_limits())
    stack.callback(lambda: loop.run_until_complete(plain_pool.aclose()))
    httpx_pool = client(plain_pool)
    async_client = httpx.AsyncClient(transport=AiohttpTransport(limits=_limits()),
                                     timeout=httpx.Timeout(30.0, connect=5.0))
    stack.callback(lambda: loop.run_until_complete(async_client.aclose()))
    headers = {"authorization": "Bearer sk-bench", "x-request-id": "4f3a9c2b7d1e000000000001"}

    async def post(via: UpstreamClient) -> None:
        await via.post_json("/embeddings", BODY, request_id="4f3a9c2b7d1e000000000001")

    async def post_with_client() -> None:
        response = await async_client.post(base_url + "/embeddings", json=BODY, headers=headers)
        response.raise_for_status()
        orjson.loads(response.content)

    async def slot_fast_path() -> None:
        await ours._acquire_slot(30.0)
        ours._slots.release()

    async def slot_with_timer() -> None:
        async with asyncio.timeout(30.0):
            await ours._slots.acquire()
        ours._slots.release()

    return [
        Case("aiohttp pool vs httpx pool", "providers/upstream/client.py UpstreamClient.start",
             _on(loop, _spread(lambda: post(httpx_pool))), _on(loop, _spread(lambda: post(ours))), "POST"),
        Case("transport direct vs AsyncClient", "providers/upstream/client.py UpstreamClient.post_json",
             _on(loop, _spread(post_with_client)), _on(loop, _spread(lambda: post(ours))), "POST"),
        Case("free slot taken without a timer", "providers/upstream/client.py UpstreamClient._acquire_slot",
             _on(loop, _spread(slot_with_timer, 1)), _on(loop, _spread(slot_fast_path, 1)), "call"),
    ]


async def _general_run_batches(
    batches: Sequence[Batch], call: Callable[[Batch], Awaitable[T]], *, concurrency: int
) -> list[T]:
    """``run_batches`` without its one-batch branch (its general path, as written there)."""
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


def _general_merge(results: Sequence[EmbeddingResult]) -> EmbeddingResult:
    """``merge_results`` without its one-result branch (its general path, as written there)."""
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


def single_batch_case(loop: asyncio.AbstractEventLoop) -> Case:
    result = EmbeddingResult(vectors=np.zeros((1, 1024), np.float32), token_counts=[9], cost_usd=1.8e-7)
    batches = [Batch(0, 1)]

    async def call(batch: Batch) -> EmbeddingResult:
        return result

    async def as_gateway() -> None:
        merge_results(await run_batches(batches, call, concurrency=4))

    async def general() -> None:
        _general_merge(await _general_run_batches(batches, call, concurrency=4))

    return Case("one-batch branch: run+merge", "gateway/batching.py run_batches, merge_results",
                _on(loop, _spread(general, 1)), _on(loop, _spread(as_gateway, 1)), "request")


class _RowPerTransaction:
    """The plain ledger: one writer thread, one transaction per row, the same store."""

    def __init__(self, path: Path) -> None:
        self._store = SqliteStore(path, busy_timeout_s=1.0)
        self._store.open()
        self._queue: queue.SimpleQueue[UsageRecord | Callable[[], object] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def record(self, rec: UsageRecord) -> None:
        self._queue.put(rec)

    async def flush(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put(lambda: loop.call_soon_threadsafe(done.set_result, None))
        await done

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._store.close()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, UsageRecord):
                self._store.write([item])
            else:
                item()


def ledger_case(loop: asyncio.AbstractEventLoop, folder: Path, stack: contextlib.ExitStack) -> Case:
    ledger = UsageLedger(f"sqlite:///{folder}/batched.db")
    loop.run_until_complete(ledger.start())
    stack.callback(lambda: loop.run_until_complete(ledger.aclose()))
    plain = _RowPerTransaction(folder / "per-row.db")
    stack.callback(plain.close)
    row = UsageRecord(1.7e9, "4f3a9c2b7d1e000000000001", None, "single", "one", "openai", "fake-embed", 1, 9, 9,
                      1.8e-7, 200, 12.5, 1)

    async def batched(n: int) -> None:
        for _ in range(n):
            ledger.record(row)
        await ledger.flush()

    async def per_row(n: int) -> None:
        for _ in range(n):
            plain.record(row)
        await plain.flush()

    return Case("batched ledger writer", "gateway/usage/ledger.py UsageLedger", _on(loop, per_row),
                _on(loop, batched), "row")


def app_cases(loop: asyncio.AbstractEventLoop, upstream: str, folder: Path, stack: contextlib.ExitStack) -> list[Case]:
    """The gateway's app as ``serve`` builds it (local model loaded, ledger and metrics on),
    called in-process through ASGI: a served process's heap, tokenizer and requests."""
    config = parse_config({
        "usage": {"ledger": f"sqlite:///{folder}/app.db"},
        "models": {
            "mini": {"provider": "onnx", "model": "all-MiniLM-L6-v2"},
            "fake": {"provider": "openai", "base_url": upstream, "model": "fake-embed", "api_key": "sk-bench"},
        },
    }, {})
    runtime = build_runtime(config)
    app = create_app(config, runtime=runtime)
    lifespan = contextlib.AsyncExitStack()
    loop.run_until_complete(lifespan.enter_async_context(app.lifespan_context(app)))
    stack.callback(lambda: loop.run_until_complete(lifespan.aclose()))
    alias = runtime.aliases["mini"]
    provider = alias.deployments[0].provider
    service = EmbeddingService(runtime, Router())
    cases = []
    for size in (1, 16):
        inputs = [f"{TEXT} {i}" for i in range(size)]

        async def inline(inputs: list[str] = inputs) -> None:
            await service.count_tokens(alias, inputs)

        async def threaded(inputs: list[str] = inputs) -> None:
            await asyncio.to_thread(provider.count_tokens, inputs)

        cases.append(Case(f"count tokens on loop, {size} text{'s' * (size > 1)}",
                          "gateway/service.py _INLINE_COUNT (and onnx.py _INLINE_TOKENIZE)",
                          _on(loop, _spread(threaded, 1)), _on(loop, _spread(inline, 1)), "request"))
    return cases




@contextlib.contextmanager
def cases() -> Iterator[list[Case]]:
    """Every case of this module; the upstream, pools, ledger and model live until exit."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with contextlib.ExitStack() as stack:
            upstream = stack.enter_context(fake_openai_upstream(1024))
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            made: list[Case] = [deadline_case(loop)]
            made += upstream_cases(loop, f"{upstream}/v1", stack)
            made.append(single_batch_case(loop))
            made.append(ledger_case(loop, folder, stack))
            made += app_cases(loop, f"{upstream}/v1", folder, stack)
            yield made
    finally:
        loop.close()
        asyncio.set_event_loop(None)

