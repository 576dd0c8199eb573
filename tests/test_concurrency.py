"""Concurrent callers are batched together and each gets exactly its own vectors."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from conftest import cosine


def test_64_concurrent_requests_get_their_own_vectors(local_gateway: str, client: httpx.Client) -> None:
    texts = [f"request number {i}: " + "lorem ipsum " * (i % 13) for i in range(64)]
    expected = np.array([d["embedding"] for d in client.post("/v1/embeddings", json={"model": "mini", "input": texts}).json()["data"]])

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=local_gateway, timeout=120, limits=limits) as http:
            return await asyncio.gather(*[
                http.post("/v1/embeddings", json={"model": "mini", "input": [text, text.upper()] if i % 2 else text})
                for i, text in enumerate(texts)
            ])

    responses = asyncio.run(fire())
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert len(data) == (2 if i % 2 else 1)
        # Its own vector, and closer to its own text than to any other request's.
        similarities = expected @ np.array(data[0]["embedding"])
        assert int(np.argmax(similarities)) == i
        assert cosine(data[0]["embedding"], expected[i]) > 0.9999
