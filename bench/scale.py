"""Several workers, and rate limits in Redis, against one worker with limits in memory.

Starts a fake OpenAI-style upstream, a redis-server of its own (on a free loopback port)
and three gateways in front of the upstream, every request under a gateway key with an
rpm limit far above the load (so every request pays the check and none is refused):

- ``1w-memory``: one worker, limits in process memory (the default);
- ``1w-redis``:  one worker, ``state: redis://...`` (one Lua call per request);
- ``2w-redis``:  ``serve --workers 2``, limits in Redis (what several workers need).

It drives them alternately at concurrency 32 with one short text per request, and prints
for each round and as medians: ``redis/memory`` (the cost of shared limits) and
``2 workers/1 worker``. On a 2-core machine the load generator, the fake upstream and
Redis share the cores with the gateway, so the second ratio stays well under 2.

    python bench/scale.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fake_openai_upstream, free_port, gateway_process, percentile  # noqa: E402
from bench.loadgen import LoadResult, drive  # noqa: E402

KEY = "sk-bench-scale"
BODY = orjson.dumps({"model": "fake", "input": ["the quick brown fox jumps over the lazy dog"]})


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench/scale.py needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def config(upstream: str, state: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "usage": {"ledger": "off"},
        "auth": {"keys": [{"id": "bench", "key": KEY, "rpm": 10**9, "tpm": 10**12}]},
        "models": {"fake": {"provider": "openai", "base_url": f"{upstream}/v1", "model": "fake-embed", "api_key": "sk-x"}},
    }
    if state is not None:
        body["state"] = state
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(fake_openai_upstream(256))
        redis = stack.enter_context(redis_server())
        targets = {
            "1w-memory": stack.enter_context(gateway_process(config(upstream, None))),
            "1w-redis": stack.enter_context(gateway_process(config(upstream, redis))),
            "2w-redis": stack.enter_context(gateway_process(config(upstream, redis), extra_args=["--workers", "2"])),
        }
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        results: dict[str, list[LoadResult]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            order = list(targets.items())
            for name, base in order if round_number % 2 == 0 else reversed(order):
                result = asyncio.run(drive(
                    f"{base}/v1/embeddings", BODY, concurrency=args.concurrency, seconds=args.seconds, headers=headers,
                ))
                results[name].append(result)
            line = "  ".join(f"{name} {results[name][-1].rate:7.1f} req/s" for name in targets)
            print(f"round {round_number + 1}: {line}", flush=True)

    for name, runs in results.items():
        latencies = [x for r in runs for x in r.latencies]
        errors = sum(r.errors for r in runs)
        print(f"  {name:10s} median {statistics.median(r.rate for r in runs):7.1f} req/s  "
              f"p50 {percentile(latencies, 50) * 1000:6.2f} ms  p99 {percentile(latencies, 99) * 1000:6.2f} ms"
              + (f"  errors {errors}" if errors else ""))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x.rate / y.rate for x, y in zip(results[a], results[b]))

    print(f"\nredis/memory (1 worker) = {ratio('1w-redis', '1w-memory'):.2f}   "
          f"2 workers/1 worker (redis limits) = {ratio('2w-redis', '1w-redis'):.2f}   "
          f"2 workers redis/1 worker memory = {ratio('2w-redis', '1w-memory'):.2f}")


if __name__ == "__main__":
    main()
