"""What the gateway adds in front of an OpenAI-style upstream, against the floor a pass-through
proxy on the same stack pays.

Starts a fake OpenAI-style upstream (1024-dimension vectors), the gateway in front of it
and a bare pass-through proxy (bench/passthrough.py), then drives all three with the same
load, alternating them: concurrency 1 and 32; one short text per request and 32 texts per
request; the client asks for ``float``. With ``--accounting`` it also runs a second gateway
with the usage ledger and metrics off and prints the ratio between the two.

    python bench/overhead.py [--seconds 2] [--rounds 5] [--accounting] [--client-passthrough] [--baseline DIR]
                             [--provider cohere|voyage|jina]

``--provider NAME`` adds that provider's fake upstream (Cohere ``/v2/embed``, Voyage or Jina
``/v1/embeddings``; a 1024-dimension model, the same width as the OpenAI-style one), a
gateway alias in front of it and a pass-through to it (its clients send the provider's own
body asking for JSON floats, as the OpenAI-style clients do), so that provider's
``gateway/passthrough`` ratio is measured in the same rounds as the OpenAI-style
provider's, and their quotient printed. The gateway asks Voyage and Jina for base64 floats
and Cohere for JSON floats (its ``float`` type), which is what the quotient shows.

Each figure is the median over rounds of a ratio (or difference) measured within one round,
where the targets ran back to back (in reverse order every other round): on a shared
machine the speed drifts between rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, fake_openai_upstream, gateway_process, listening_process, percentile  # noqa: E402
from bench.loadgen import LoadResult, drive  # noqa: E402

PAYLOADS = {
    "1 text": ["the quick brown fox jumps over the lazy dog"],
    "32 texts": [f"text number {i}: the quick brown fox jumps over the lazy dog" for i in range(32)],
}


@dataclass(frozen=True)
class Provider:
    """A provider measured beside the OpenAI-style one: its fake, a 1024-dimension model,
    the path its API serves, what its base_url adds to the host, and its clients' body."""

    fake: str
    model: str
    path: str
    base_suffix: str
    native_body: Callable[[str, list[str]], dict[str, Any]]


PROVIDERS: dict[str, Provider] = {
    "cohere": Provider("fakes.cohere_upstream", "embed-english-v3.0", "/v2/embed", "",
                       lambda model, texts: {"model": model, "texts": texts, "input_type": "search_document",
                                             "embedding_types": ["float"]}),
    "voyage": Provider("fakes.voyage_upstream", "voyage-3.5", "/v1/embeddings", "/v1",
                       lambda model, texts: {"model": model, "input": texts}),
    "jina": Provider("fakes.jina_upstream", "jina-embeddings-v3", "/v1/embeddings", "/v1",
                     lambda model, texts: {"model": model, "input": texts, "embedding_type": "float",
                                           "normalized": True}),
}


def gateway_config(upstream: str, *, ledger: str, metrics: bool,
                   other: tuple[str, str] | None = None) -> dict[str, Any]:
    models: dict[str, Any] = {
        "fake": {
            "provider": "openai",
            "base_url": f"{upstream}/v1",
            "model": "fake-embed",
            "api_key": "sk-bench",
            "price_per_million_tokens": 0.02,
        }
    }
    if other is not None:
        name, url = other
        models[name] = {
            "provider": name,
            "base_url": url + PROVIDERS[name].base_suffix,
            "model": PROVIDERS[name].model,
            "api_key": "bench-key",
            "price_per_million_tokens": 0.1,
        }
    return {"server": {"metrics": metrics}, "usage": {"ledger": ledger}, "models": models}


def request_body(target: str, texts: list[str]) -> bytes:
    """What a client of that target sends: the gateway's API, or the upstream's own
    (targets of another provider end in ``-<provider>``)."""
    other = next((name for name in PROVIDERS if target.endswith(f"-{name}")), None)
    if target.startswith("gateway"):
        return orjson.dumps({"model": other or "fake", "input": texts, "encoding_format": "float"})
    if other is not None:
        return orjson.dumps(PROVIDERS[other].native_body(PROVIDERS[other].model, texts))
    return orjson.dumps({"model": "fake-embed", "input": texts, "encoding_format": "float"})


def summary(result: LoadResult) -> str:
    return (
        f"{result.rate:8.1f} req/s  p50 {percentile(result.latencies, 50) * 1000:6.2f} ms  "
        f"p99 {percentile(result.latencies, 99) * 1000:6.2f} ms"
        + (f"  errors {result.errors} {result.statuses}" if result.errors else "")
    )


def merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for r in results:
        merged.requests += r.requests
        merged.errors += r.errors
        merged.seconds += r.seconds
        merged.latencies.extend(r.latencies)
        for status, count in r.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accounting", action="store_true", help="also compare ledger+metrics on and off")
    parser.add_argument("--client-passthrough", action="store_true",
                        help="also a pass-through that sends through httpx.AsyncClient (the usual httpx way)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS),
                        help="also measure this provider's gateway/passthrough beside the OpenAI-style one's")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also the gateway of another checkout (e.g. a git worktree of an older commit), "
                             "side by side in the same rounds: prints gateway/baseline")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(fake_openai_upstream(1024))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        targets = {"direct": f"{upstream}/v1/embeddings"}
        proxy = stack.enter_context(listening_process(
            [sys.executable, str(Path(__file__).with_name("passthrough.py")), "--upstream", upstream]
        ))
        targets["passthrough"] = f"{proxy}/v1/embeddings"
        if args.client_passthrough:
            client_proxy = stack.enter_context(listening_process(
                [sys.executable, str(Path(__file__).with_name("passthrough.py")), "--upstream", upstream, "--via-client"]
            ))
            targets["passthrough-asyncclient"] = f"{client_proxy}/v1/embeddings"
        other: tuple[str, str] | None = None
        provider = args.provider
        if provider is not None:
            spec = PROVIDERS[provider]
            fake = stack.enter_context(listening_process(
                [sys.executable, "-m", spec.fake, "--port", "0"], cwd=ROOT / "tests"
            ))
            other = (provider, fake)
            proxy_other = stack.enter_context(listening_process(
                [sys.executable, str(Path(__file__).with_name("passthrough.py")), "--upstream", fake,
                 "--path", spec.path]
            ))
            targets[f"passthrough-{provider}"] = f"{proxy_other}{spec.path}"
        gateway = stack.enter_context(gateway_process(
            gateway_config(upstream, ledger=f"sqlite:///{folder}/usage.db", metrics=True, other=other)
        ))
        targets["gateway"] = f"{gateway}/v1/embeddings"
        if provider is not None:
            targets[f"gateway-{provider}"] = f"{gateway}/v1/embeddings"
        if args.baseline is not None:
            baseline = stack.enter_context(gateway_process(
                gateway_config(upstream, ledger=f"sqlite:///{folder}/baseline.db", metrics=True),
                checkout=args.baseline.resolve(),
            ))
            targets["gateway-baseline"] = f"{baseline}/v1/embeddings"
        if args.accounting:
            bare_gateway = stack.enter_context(gateway_process(gateway_config(upstream, ledger="off", metrics=False)))
            targets["gateway-no-accounting"] = f"{bare_gateway}/v1/embeddings"

        results: dict[tuple[str, str, int], list[LoadResult]] = {}
        for round_number in range(args.rounds):
            for label, texts in PAYLOADS.items():
                for concurrency in (1, 32):
                    # Every other round in reverse order, so that a drift in the machine's
                    # speed within a round does not always fall on the same target.
                    order = list(targets.items())
                    for name, url in order if round_number % 2 == 0 else reversed(order):
                        body = request_body(name, texts)
                        result = asyncio.run(drive(url, body, concurrency=concurrency, seconds=args.seconds))
                        results.setdefault((label, name, concurrency), []).append(result)
            print(f"round {round_number + 1} of {args.rounds} done", flush=True)

    merged = {key: merge(value) for key, value in results.items()}
    for label in PAYLOADS:
        for concurrency in (1, 32):
            print(f"\n{label}, concurrency {concurrency}:")
            for name in targets:
                print(f"  {name:22s} {summary(merged[(label, name, concurrency)])}")
    ratios = []
    for label in PAYLOADS:
        def per_round(numerator: str, denominator: str, concurrency: int, label: str = label) -> float:
            """Median over rounds of the ratio measured within each round (side by side)."""
            pairs = zip(results[(label, numerator, concurrency)], results[(label, denominator, concurrency)])
            return statistics.median(a.rate / b.rate for a, b in pairs)

        rounds = zip(results[(label, "gateway", 32)], results[(label, "passthrough", 32)])
        print(f"\n{label}: gateway/passthrough at concurrency 32, round by round: "
              + " ".join(f"{g.rate / p.rate:.2f}" for g, p in rounds))

        added = statistics.median(
            (percentile(g.latencies, 50) - percentile(d.latencies, 50)) * 1000
            for g, d in zip(results[(label, "gateway", 1)], results[(label, "direct", 1)])
        )
        ratio = per_round("gateway", "passthrough", 32)
        print(f"\n{label}: gateway adds {added:.2f} ms p50 over direct at concurrency 1; "
              f"gateway/passthrough at concurrency 32 = {ratio:.2f} (medians of {args.rounds} rounds)")
        ratios.append(f"gateway/passthrough ({label}) = {ratio:.2f}")
        if args.client_passthrough:
            against_client = per_round("gateway", "passthrough-asyncclient", 32)
            ratios.append(f"gateway/passthrough-asyncclient ({label}) = {against_client:.2f}")
        if args.baseline is not None:
            against_baseline = per_round("gateway", "gateway-baseline", 32)
            baseline_ratio = per_round("gateway-baseline", "passthrough", 32)
            ratios.append(f"baseline gateway/passthrough ({label}) = {baseline_ratio:.2f}")
            ratios.append(f"gateway/baseline ({label}) = {against_baseline:.2f}")
        if args.accounting:
            on_off = per_round("gateway", "gateway-no-accounting", 32)
            ratios.append(f"accounting on/off ({label}) = {on_off:.2f}")
        if provider is not None:
            other_ratio = per_round(f"gateway-{provider}", f"passthrough-{provider}", 32)
            quotient = statistics.median(
                (go.rate / po.rate) / (g.rate / p.rate)
                for g, p, go, po in zip(*(results[(label, t, 32)] for t in
                                          ("gateway", "passthrough", f"gateway-{provider}",
                                           f"passthrough-{provider}")))
            )
            ratios.append(f"{provider} gateway/passthrough ({label}) = {other_ratio:.2f}")
            ratios.append(f"{provider}/openai-style ratio ({label}) = {quotient:.2f}")
    print("\n" + "   ".join(ratios))


if __name__ == "__main__":
    main()
