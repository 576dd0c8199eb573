"""Pieces shared by the cache tests that go through the real gateway to a counting fake."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import numpy as np

from fakes.openai_upstream import OpenAIUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import fake_vector
from gateway.app import create_app
from gateway.config import parse_config

OAI_KEY = "sk-cache-tests"
PRICE = 0.02


class GatedUpstream(OpenAIUpstream):
    """The OpenAI fake, holding every answer while ``gate`` is clear (set by default)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = threading.Event()
        self.gate.set()

    async def _embeddings(self, body: Any, fault: Any) -> Any:
        if not self.gate.is_set():
            await asyncio.to_thread(self.gate.wait)
        return await super()._embeddings(body, fault)


def models(base_url: str, **extra: Any) -> dict[str, Any]:
    common = {"provider": "openai", "base_url": f"{base_url}/v1", "api_key": OAI_KEY, "price_per_million_tokens": PRICE}
    aliases: dict[str, Any] = {
        # Native dimensions: the upstream makes each width itself.
        "small": {**common, "model": "text-embedding-3-small"},
        # No native dimensions: the gateway truncates full-width vectors (Matryoshka).
        # Batches of at most 64 inputs (a deployment's limit, not the alias's).
        "mini": {"deployments": [
            {**common, "name": "mini", "model": "fake-minilm", "matryoshka": True, "encoding": "float", "max_inputs": 64},
        ]},
        "nocache": {**common, "model": "fake-minilm", "encoding": "float", "cache": False},
    }
    aliases.update(extra)
    return aliases


@contextmanager
def gateway(upstream: str, cache: dict[str, Any] | None, **sections: Any) -> Iterator[RunningServer[Any]]:
    body: dict[str, Any] = {"models": models(upstream), "usage": {"ledger": "off"}, **sections}
    if cache is not None:
        body["cache"] = cache
    config = parse_config(body, env={})
    with run_in_thread(create_app(config), lifespan="on") as server:
        yield server


def embed(base: str, inputs: Any, *, model: str = "mini", headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    response = httpx.post(
        f"{base}/v1/embeddings", json={"model": model, "input": inputs, **body}, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return response


def sent_texts(upstream: OpenAIUpstream) -> list[str]:
    """Every input the fake was asked to embed, in order."""
    texts: list[str] = []
    for entry in upstream.log.requests:
        items = entry.json["input"]
        texts.extend([items] if isinstance(items, str) else items)
    return texts


def expected(text: str, *, model: str = "mini", dims: int | None = None) -> np.ndarray:
    if model == "small":
        return fake_vector(text, dims or 1536)
    full = fake_vector(text, 384)
    if dims is None:
        return full
    cut = full[:dims]
    return (cut / np.linalg.norm(cut)).astype(np.float32)


def metric(base: str, name: str) -> float:
    """The sum of a metric's samples in the gateway's /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
