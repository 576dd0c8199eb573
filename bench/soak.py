"""Soak: an alias of two fake upstreams, the first failing a share of requests in mixed ways.

Starts two fake OpenAI-style upstreams (``python -m fakes.openai_upstream``) and the
gateway (``embedding-gateway serve``) as subprocesses on loopback. The first upstream
fails ``--fail-rate`` of its requests with one of its random faults (500, 503, 429,
dropped connections, invalid JSON, a vector missing, a short delay); the alias routes
``fallback`` with ``retries: 1``. ``--clients`` concurrent clients send requests of a
few random texts for ``--seconds``, and every vector is checked against the text it was
asked for. Target: every request succeeds, no vector is wrong.

    python bench/soak.py [--seconds 60] [--clients 32] [--fail-rate 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.harness import fake_openai_upstream, gateway_process, percentile  # noqa: E402
from fakes.vectors import fake_vector  # noqa: E402

DIMS = 384
MODEL = "fake-minilm"
WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud".split()


@dataclass
class Tally:
    sent: int = 0
    succeeded: int = 0
    failed: Counter[int] = field(default_factory=Counter)
    checked: int = 0
    wrong: int = 0
    latencies: list[float] = field(default_factory=list)
    attempts: Counter[int] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class Expected:
    """``fake_vector`` per text, computed once."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray[Any, Any]] = {}

    def __call__(self, text: str) -> np.ndarray[Any, Any]:
        vector = self._cache.get(text)
        if vector is None:
            vector = self._cache[text] = fake_vector(text, DIMS)
        return vector


def random_texts(rng: random.Random, serial: int) -> list[str]:
    count = rng.randint(1, 4)
    return [f"{serial}-{i} " + " ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for i in range(count)]


async def client(
    http: httpx.AsyncClient, number: int, until: float, tally: Tally, expected: Expected
) -> None:
    rng = random.Random(number)
    serial = 0
    while time.monotonic() < until:
        serial += 1
        texts = random_texts(rng, number * 1_000_000 + serial)
        tally.sent += 1
        sent = time.perf_counter()
        try:
            response = await http.post("/v1/embeddings", json={"model": "soak", "input": texts})
        except httpx.HTTPError as exc:
            tally.failed[0] += 1
            tally.errors[type(exc).__name__] += 1
            continue
        tally.latencies.append(time.perf_counter() - sent)
        if response.status_code != 200:
            tally.failed[response.status_code] += 1
            tally.errors[response.text[:160]] += 1
            continue
        tally.succeeded += 1
        tally.attempts[int(response.headers.get("x-gateway-attempts", "0"))] += 1
        tally.served_by[response.headers.get("x-gateway-deployment", "?")] += 1
        data = response.json()["data"]
        if len(data) != len(texts):
            tally.wrong += len(texts)
            continue
        for item, text in zip(data, texts):
            tally.checked += 1
            got = np.asarray(item["embedding"], dtype=np.float32)
            if got.shape != (DIMS,) or not np.allclose(got, expected(text), atol=1e-5):
                tally.wrong += 1


async def soak(base: str, *, seconds: float, clients: int) -> Tally:
    tally = Tally()
    expected = Expected()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(*[client(http, n, until, tally, expected) for n in range(clients)])
    return tally


def config(primary: str, secondary: str) -> dict[str, Any]:
    def deployment(name: str, base: str) -> dict[str, Any]:
        return {"name": name, "provider": "openai", "base_url": f"{base}/v1", "model": MODEL, "space": MODEL,
                "timeout_s": 5}

    return {
        "usage": {"ledger": "off"},
        "models": {
            "soak": {
                "routing": "fallback",
                "retries": 1,
                "timeout_s": 15,
                "deployments": [deployment("primary", primary), deployment("secondary", secondary)],
            }
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with fake_openai_upstream(DIMS, model=MODEL) as primary, fake_openai_upstream(DIMS, model=MODEL) as secondary:
        faults = httpx.post(f"{primary}/_fake/faults", json={"fail_rate": args.fail_rate, "seed": args.seed})
        faults.raise_for_status()
        with gateway_process(config(primary, secondary)) as base:
            started = time.perf_counter()
            tally = asyncio.run(soak(base, seconds=args.seconds, clients=args.clients))
            elapsed = time.perf_counter() - started
        injected = httpx.get(f"{primary}/_fake/faults").json()["injected"]
        upstream_requests = [httpx.get(f"{url}/_fake/requests?limit=0").json()["count"] for url in (primary, secondary)]
    failed = ", ".join(f"{status or 'transport'}: {n}" for status, n in sorted(tally.failed.items())) or "none"
    attempts = sum(a * n for a, n in tally.attempts.items())
    print(f"soak: {args.clients} clients for {elapsed:.1f} s; primary fails {args.fail_rate:.0%} of requests")
    print(f"faults injected at the primary: {dict(sorted(injected.items()))}")
    print(f"upstream requests: primary {upstream_requests[0]}, secondary {upstream_requests[1]}")
    print(f"requests sent: {tally.sent}, succeeded: {tally.succeeded}, failed by status: {failed}")
    for message, n in tally.errors.most_common(3):
        print(f"  {n} x {message}")
    print(f"served by: {dict(tally.served_by)}")
    print(f"vectors checked: {tally.checked}, wrong: {tally.wrong}")
    print(
        f"latency p50 {percentile(tally.latencies, 50) * 1000:.1f} ms, "
        f"p99 {percentile(tally.latencies, 99) * 1000:.1f} ms"
    )
    print(
        f"attempts per request: mean {attempts / max(1, tally.succeeded):.3f}, "
        f"distribution {dict(sorted(tally.attempts.items()))}"
    )
    print(
        f"succeeded/sent = {tally.succeeded / max(1, tally.sent):.3f}  "
        f"wrong/checked = {tally.wrong / max(1, tally.checked):.3f}"
    )


if __name__ == "__main__":
    main()
