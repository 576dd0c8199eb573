"""A hit can never stand in for another input: property-based tests (hypothesis).

Through the real gateway: random sequences of requests over several aliases, widths,
encodings, input kinds (texts and token ids) and Cache-Control directives, with inputs drawn
from a small vocabulary (so batches mix hits, misses and repeats) and a cache small enough
to evict. Every vector the gateway returns must be the one the upstream makes for *that*
input. In process: many concurrent requests through one EmbeddingCache with random holds
and failures; every resolved entry must belong to its own key.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cache_support import OAI_KEY, GatedUpstream, expected, gateway
from fakes.server import run_in_thread
from fakes.vectors import fake_token_count, fake_vector
from gateway.cache import Deliver, EmbeddingCache, Entry, MemoryBackend
from gateway.tokens import CL100K
from providers.base import ProviderUnavailable

TEXTS = [f"word{i} " * (1 + i % 3) for i in range(24)] + ["1 2", "3"]
TOKEN_IDS = [[1, 2], [3], [2, 1], [5, 6, 7], [1, 2, 3], [9]]

request = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["mini", "small"]),
        "dims": st.sampled_from([None, 16, 64]),
        "encoding": st.sampled_from(["float", "base64"]),
        "kind": st.sampled_from(["texts", "texts", "ids"]),
        "picks": st.lists(st.integers(min_value=0, max_value=len(TEXTS) - 1), min_size=1, max_size=12),
        "control": st.sampled_from([None, None, None, "no-cache", "no-store"]),
    }
)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatedUpstream, str]]:
    with run_in_thread(GatedUpstream(api_key=OAI_KEY, log_size=10)) as fake:
        # ~25 vectors of 1536 floats: evictions happen, so hit patterns shift as examples run.
        with gateway(fake.base_url, {"backend": "memory", "max_bytes": 160_000}) as server:
            yield fake.app, server.base_url


def _vector(item: dict[str, Any], encoding: str) -> np.ndarray:
    value = item["embedding"]
    if encoding == "float":
        return np.asarray(value, dtype=np.float32)
    return np.frombuffer(base64.b64decode(value), dtype="<f4")


def _expected(item: Any, model: str, dims: int | None) -> np.ndarray:
    if isinstance(item, list) and model == "mini":
        # fake-minilm is not one of OpenAI's models: its deployment reads token ids as
        # cl100k_base and sends the text they decode to.
        item = CL100K.decode_sync([item])[0]
    if isinstance(item, str):
        return expected(item, model=model, dims=dims)
    if model == "small":
        return fake_vector(item, dims or 1536)
    full = fake_vector(item, 384)
    if dims is None:
        return full
    return (full[:dims] / np.linalg.norm(full[:dims])).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request, min_size=1, max_size=4))
def test_every_vector_belongs_to_its_own_input(stack: tuple[GatedUpstream, str], requests: list[dict[str, Any]]) -> None:
    _, base = stack
    with httpx.Client(base_url=base, timeout=30) as client:
        for spec in requests:
            vocabulary: list[Any] = TEXTS if spec["kind"] == "texts" else TOKEN_IDS
            inputs = [vocabulary[p % len(vocabulary)] for p in spec["picks"]]
            body: dict[str, Any] = {"model": spec["model"], "input": inputs, "encoding_format": spec["encoding"]}
            if spec["dims"] is not None:
                body["dimensions"] = spec["dims"]
            headers = {"Cache-Control": spec["control"]} if spec["control"] else {}
            response = client.post("/v1/embeddings", json=body, headers=headers)
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            assert [d["index"] for d in data] == list(range(len(inputs)))
            for item, sent in zip(data, inputs):
                got = _vector(item, spec["encoding"])
                np.testing.assert_allclose(got, _expected(sent, spec["model"], spec["dims"]), atol=1e-6)
            tokens = response.json()["usage"]["prompt_tokens"]
            if response.headers.get("x-gateway-usage-estimated") == "true":
                # A hit whose tokens were a share of a batch total the upstream reported only
                # as a sum: an estimate, and said to be one.
                assert tokens >= len(inputs)
            elif spec["kind"] == "texts" or spec["model"] == "small":
                assert tokens == sum(fake_token_count(i) for i in inputs)
            cached = int(response.headers["x-gateway-cached-inputs"])
            status = response.headers["x-gateway-cache"]
            event(f"cache {status}")
            if spec["control"] == "no-store":
                assert (status, cached) == ("off", 0)
            elif spec["control"] == "no-cache":
                assert (status, cached) == ("miss", 0)
            else:
                assert status == ("miss" if cached == 0 else "hit" if cached == len(inputs) else "partial")


def _vec(key: bytes) -> np.ndarray:
    return np.frombuffer(key[:16], dtype=np.float32).copy()


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=0, max_value=15), min_size=1, max_size=8, unique=True),
            st.booleans(),  # read (False: no-cache)
            st.sampled_from(["ok", "ok", "ok", "fail", "cancel"]),
            st.integers(min_value=0, max_value=3),  # scheduling steps before answering
        ),
        min_size=1,
        max_size=8,
    )
)
def test_concurrent_resolves_never_mix_entries(batches: list[tuple[list[int], bool, str, int]]) -> None:
    keys = [bytes([i]) * 16 + bytes(16) for i in range(16)]

    async def main() -> None:
        cache = EmbeddingCache(MemoryBackend(max_bytes=4_000))

        async def one(picks: list[int], read: bool, outcome: str, steps: int) -> None:
            async def compute(positions: list[int], deliver: Deliver) -> None:
                for _ in range(steps):
                    await asyncio.sleep(0)
                if outcome == "fail":
                    raise ProviderUnavailable("down")
                if outcome == "cancel":
                    raise asyncio.CancelledError()
                deliver(positions, [Entry(vector=_vec(keys[picks[p]]), tokens=picks[p]) for p in positions], 0)

            try:
                resolved = await cache.resolve([[keys[p]] for p in picks], compute, read=read)
            except (ProviderUnavailable, asyncio.CancelledError):
                return
            for pick, entry in zip(picks, resolved.entries):
                assert np.array_equal(entry.vector, _vec(keys[pick])) and entry.tokens == pick

        await asyncio.gather(*(one(*b) for b in batches), return_exceptions=False)
        await cache.flush()
        assert len(cache.flights) == 0 and cache.waiting == 0

    asyncio.run(main())
