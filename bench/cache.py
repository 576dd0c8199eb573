"""The embedding cache: what it saves on a re-index, and what its hit path costs.

1. Re-index: a corpus of chunks where half repeat (each of N/2 distinct chunks appears twice,
   shuffled), posted in requests of 32 chunks from 8 connections, through a fake OpenAI-style
   upstream that answers every call after 50 ms. Once through a gateway without a cache and
   once through one with the memory cache: upstream calls, upstream tokens and wall-clock
   throughput, side by side.
2. Hit path: against a free upstream (no delay), one request of 32 texts repeated from 32
   connections, asking for ``float`` and then for ``base64`` (the openai SDK's default), through a gateway whose cache holds them, a gateway without a cache, and the
   bare pass-through proxy (bench/passthrough.py); rounds alternate the order.
3. Memory: the memory backend offered 10x its max_bytes of 1024-dimension vectors; what it
   holds by its own count and by tracemalloc, and its evictions.

    python bench/cache.py [--chunks 2000] [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.harness import ROOT, gateway_process, listening_process  # noqa: E402
from bench.loadgen import LoadResult, drive, post_each  # noqa: E402
from fakes.vectors import fake_token_count  # noqa: E402
from gateway.cache import Entry, MemoryBackend, encode_entry  # noqa: E402

WIDTH = 1024
PER_REQUEST = 32
CONNECTIONS = 8


def upstream() -> contextlib.AbstractContextManager[str]:
    command = [
        sys.executable, "-m", "fakes.openai_upstream", "--port", "0",
        "--model", f"fake-embed={WIDTH}", "--log-size", "1000000",
    ]
    return listening_process(command, cwd=ROOT / "tests")


def config(base: str, *, cache: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "usage": {"ledger": "off"},
        "models": {
            "fake": {
                "provider": "openai", "base_url": f"{base}/v1", "model": "fake-embed",
                "api_key": "sk-bench", "price_per_million_tokens": 0.02,
            }
        },
    }
    if cache:
        body["cache"] = {"backend": "memory", "max_bytes": 256 * 1024 * 1024}
    return body


def upstream_totals(base: str) -> tuple[int, int]:
    """Calls the upstream received and the tokens of the inputs in them."""
    log = httpx.get(f"{base}/_fake/requests", timeout=30).json()
    tokens = sum(fake_token_count(t) for r in log["requests"] for t in r["json"]["input"])
    return int(log["count"]), tokens


def corpus(chunks: int) -> list[str]:
    distinct = [f"chunk {i}: " + " ".join(f"w{(i * 7 + j) % 997}" for j in range(40)) for i in range(chunks // 2)]
    texts = distinct * 2
    random.Random(42).shuffle(texts)
    return texts


def reindex(chunks: int) -> tuple[dict[str, dict[str, float]], str]:
    texts = corpus(chunks)
    bodies = [
        orjson.dumps({"model": "fake", "input": texts[i : i + PER_REQUEST]}) for i in range(0, len(texts), PER_REQUEST)
    ]
    figures: dict[str, dict[str, float]] = {}
    memory = ""
    for name, cached in (("no cache", False), ("cache", True)):
        with upstream() as base:
            httpx.post(f"{base}/_fake/faults", json={"mode": "delay", "seconds": 0.05, "times": None}, timeout=10)
            with gateway_process(config(base, cache=cached)) as gateway:
                result = asyncio.run(post_each(f"{gateway}/v1/embeddings", bodies, concurrency=CONNECTIONS))
                assert result.errors == 0, result.statuses
                calls, tokens = upstream_totals(base)
                figures[name] = {"calls": calls, "tokens": tokens, "rate": len(texts) / result.seconds}
                if cached:
                    metrics = httpx.get(f"{gateway}/metrics", timeout=10).text
                    memory = " ".join(
                        line for line in metrics.splitlines()
                        if line.startswith(("gateway_cache_bytes", "gateway_cache_hits_total",
                                            "gateway_cache_coalesced_total", "gateway_cache_evictions_total"))
                    )
    return figures, memory


def hit_path(seconds: float, rounds: int, encoding: str) -> dict[str, list[LoadResult]]:
    texts = [f"text number {i}: the quick brown fox jumps over the lazy dog" for i in range(32)]
    results: dict[str, list[LoadResult]] = {}
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(upstream())
        proxy = stack.enter_context(listening_process(
            [sys.executable, str(Path(__file__).with_name("passthrough.py")), "--upstream", base]
        ))
        cached = stack.enter_context(gateway_process(config(base, cache=True)))
        plain = stack.enter_context(gateway_process(config(base, cache=False)))
        targets = {
            "gateway, cached": (f"{cached}/v1/embeddings", "fake"),
            "gateway, no cache": (f"{plain}/v1/embeddings", "fake"),
            "passthrough": (f"{proxy}/v1/embeddings", "fake-embed"),
        }
        for round_number in range(rounds):
            order = list(targets.items())
            for name, (url, model) in order if round_number % 2 == 0 else reversed(order):
                body = orjson.dumps({"model": model, "input": texts, "encoding_format": encoding})
                result = asyncio.run(drive(url, body, concurrency=32, seconds=seconds))
                assert result.errors == 0, (name, result.statuses)
                results.setdefault(name, []).append(result)
    return results


def memory_bound() -> tuple[int, int, int, int]:
    max_bytes = 8 * 1024 * 1024
    backend = MemoryBackend(max_bytes=max_bytes)
    rng = np.random.default_rng(0)
    value_size = len(encode_entry(Entry(vector=np.zeros(WIDTH, np.float32), tokens=1)))
    offered = 10 * max_bytes // value_size
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]

    async def fill() -> None:
        for start in range(0, offered, 256):
            items = []
            for i in range(start, min(offered, start + 256)):
                vector = rng.standard_normal(WIDTH).astype(np.float32)
                items.append((i.to_bytes(32, "big"), encode_entry(Entry(vector=vector, tokens=10))))
            await backend.put_many(items)

    asyncio.run(fill())
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return max_bytes, backend.size_bytes, held, backend.evictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    figures, memory = reindex(args.chunks)
    print(f"re-index of {args.chunks} chunks (half repeat), {PER_REQUEST} per request, upstream answers after 50 ms:")
    for name, f in figures.items():
        print(f"  {name:9s} upstream calls {f['calls']:5.0f}  upstream tokens {f['tokens']:8.0f}  {f['rate']:8.1f} chunks/s")
    print(f"  gateway metrics after the cached run: {memory}")
    tokens_ratio = figures["cache"]["tokens"] / figures["no cache"]["tokens"]
    calls_ratio = figures["cache"]["calls"] / figures["no cache"]["calls"]
    speed_ratio = figures["cache"]["rate"] / figures["no cache"]["rate"]

    hit_ratios: dict[str, tuple[float, float]] = {}
    for encoding in ("float", "base64"):
        results = hit_path(args.seconds, args.rounds, encoding)
        print(f"\nhit path, {encoding}: 32 texts per request, concurrency 32, free upstream, "
              f"{args.rounds} rounds of {args.seconds} s:")
        for name, runs in results.items():
            print(f"  {name:18s} " + "  ".join(f"{r.rate:8.1f}" for r in runs) + " req/s")

        def per_round(a: str, b: str, results: dict[str, list[Any]] = results) -> float:
            return statistics.median(x.rate / y.rate for x, y in zip(results[a], results[b]))

        hit_ratios[encoding] = (
            per_round("gateway, cached", "gateway, no cache"), per_round("gateway, cached", "passthrough")
        )

    max_bytes, counted, held, evictions = memory_bound()
    print(f"\nmemory: max_bytes {max_bytes}, offered 10x; the backend counts {counted} bytes, "
          f"tracemalloc sees {held} bytes held, {evictions} evictions")
    hits = "   ".join(
        f"fully-cached/uncached gateway ({e}) = {plain:.2f}   fully-cached gateway/passthrough ({e}) = {proxy:.2f}"
        for e, (plain, proxy) in hit_ratios.items()
    )
    print(
        f"\nupstream tokens cache/no-cache = {tokens_ratio:.2f}   upstream calls cache/no-cache = {calls_ratio:.2f}   "
        f"re-index throughput cache/no-cache = {speed_ratio:.2f}   {hits}   "
        f"memory held/max_bytes = {held / max_bytes:.2f}"
    )


if __name__ == "__main__":
    main()
