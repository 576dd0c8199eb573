"""Local model throughput: a bare onnxruntime session against the gateway serving it.

(a) bare: the bundled model in one onnxruntime session, the corpus tokenized, sorted by
    length and run in batches of 32 (the best case: no HTTP, minimal padding);
(b) gateway: ``embedding-gateway serve`` on loopback, 32 concurrent clients each sending
    one text per request, so only the gateway's dynamic batching groups them.
Prints texts/s of both and the ratio ``gateway/bare``.

    python bench/local.py [--texts 2000] [--clients 32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import mixed_corpus  # noqa: E402
from bench.harness import gateway_process, percentile  # noqa: E402
from bench.loadgen import post_each  # noqa: E402
from providers.local.bundled import resolve_bundled  # noqa: E402


def bare_texts_per_second(texts: list[str], batch_size: int) -> float:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    _, model_path, tokenizer_path = resolve_bundled("all-MiniLM-L6-v2")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    started = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    for start in range(0, len(order), batch_size):
        batch = [encodings[i].ids for i in order[start : start + batch_size]]
        longest = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), longest), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        hidden = session.run(None, {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)})[0]
        pooled = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    return len(texts) / (time.perf_counter() - started)


def gateway_texts_per_second(base: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    bodies = [orjson.dumps({"model": "mini", "input": text}) for text in texts]
    url = f"{base}/v1/embeddings"
    asyncio.run(post_each(url, bodies[: clients * 4], concurrency=clients))  # warm-up
    result = asyncio.run(post_each(url, bodies, concurrency=clients))
    if result.errors:
        raise RuntimeError(f"gateway answered errors: {result.statuses}")
    return result.rate, result.latencies


def mean_batch_size(base: str) -> float:
    """From the gateway's own metrics: inputs per model run."""
    text = httpx.get(f"{base}/metrics").text
    values = {
        line.split(" ")[0].split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_local_batch_size_")
    }
    count = values.get("gateway_local_batch_size_count", 0.0)
    return values.get("gateway_local_batch_size_sum", 0.0) / count if count else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a local-backend option for the gateway, e.g. workers=2 (repeatable)")
    args = parser.parse_args()
    texts = mixed_corpus(args.texts)
    options = {key: yaml.safe_load(value) for key, _, value in (o.partition("=") for o in args.option)}
    model = {"provider": "onnx", "model": "all-MiniLM-L6-v2", **options}
    config = {"usage": {"ledger": "off"}, "models": {"mini": model}}
    bare_runs, gateway_runs = [], []
    with gateway_process(config) as base:
        for round_number in range(args.rounds):
            bare_runs.append(bare_texts_per_second(texts, 32))
            rate, latencies = gateway_texts_per_second(base, texts, args.clients)
            gateway_runs.append(rate)
            print(
                f"round {round_number + 1}: bare {bare_runs[-1]:.1f} texts/s, gateway {rate:.1f} texts/s "
                f"(p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms)",
                flush=True,
            )
        batch = mean_batch_size(base)
    bare, gateway = float(np.mean(bare_runs)), float(np.mean(gateway_runs))
    print(f"corpus: {len(texts)} texts, {args.clients} clients, one text per request")
    print(f"bare onnxruntime, sorted batches of 32: {bare:.1f} texts/s")
    print(f"gateway, {args.clients} concurrent clients: {gateway:.1f} texts/s (mean model batch {batch:.1f} inputs)")
    print(f"gateway/bare = {gateway / bare:.2f}")


if __name__ == "__main__":
    main()
