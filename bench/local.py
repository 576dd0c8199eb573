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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import mixed_corpus  # noqa: E402
from bench.harness import gateway_process, percentile  # noqa: E402
from providers.bundled import resolve_bundled  # noqa: E402


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


async def gateway_texts_per_second(base: str, texts: list[str], clients: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:

        async def worker() -> None:
            while not queue.empty():
                text = queue.get_nowait()
                sent = time.perf_counter()
                response = await http.post("/v1/embeddings", json={"model": "mini", "input": text})
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*[worker() for _ in range(clients)])  # warm-up happens in the first calls
        queue = asyncio.Queue()
        for text in texts:
            queue.put_nowait(text)
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(clients)])
        return len(texts) / (time.perf_counter() - started), latencies


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
            rate, latencies = asyncio.run(gateway_texts_per_second(base, texts, args.clients))
            gateway_runs.append(rate)
            print(
                f"round {round_number + 1}: bare {bare_runs[-1]:.1f} texts/s, gateway {rate:.1f} texts/s "
                f"(p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms)",
                flush=True,
            )
    bare, gateway = float(np.mean(bare_runs)), float(np.mean(gateway_runs))
    print(f"corpus: {len(texts)} texts, {args.clients} clients, one text per request")
    print(f"bare onnxruntime, sorted batches of 32: {bare:.1f} texts/s")
    print(f"gateway, {args.clients} concurrent clients: {gateway:.1f} texts/s")
    print(f"gateway/bare = {gateway / bare:.2f}")


if __name__ == "__main__":
    main()
