"""Shared pieces of the tests that go through the gateway to the fake upstreams.

Every test module builds one :class:`Stack`: the fake OpenAI-style and Perplexity-style
upstreams (real uvicorn servers on loopback) and a real gateway app in front of them,
configured with the aliases below. Nothing of our own code is mocked.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import numpy as np
import openai

from fakes.openai_upstream import OpenAIUpstream
from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import RunningServer, run_in_thread
from gateway.app import create_app
from gateway.config import parse_config

#: The gateway's upstream keys: they must never reach a client or a log line.
OAI_KEY = "sk-upstream-SECRET-7c1d9a2b4e6f8a0b1c2d"
PPLX_KEY = "pplx-SECRET-3e5f7a9b1c2d4e6f8a0b"
SECRETS = (OAI_KEY, PPLX_KEY)

ENCODINGS = ("float", "base64", "base64_int8", "base64_binary")
#: Input forms of /v1/embeddings: value sent, and the items the upstream embeds.
FORMS: dict[str, Any] = {
    "string": "the quick brown fox",
    "strings": ["alpha beta", "gamma", "delta epsilon zeta"],
    "token_ids": [101, 2023, 2003, 102],
    "token_arrays": [[101, 7592], [2088, 999, 102]],
}
OAI_PRICE = 0.02  # USD per million tokens, configured on the OpenAI-style aliases

OAIServer = RunningServer[OpenAIUpstream]
PplxServer = RunningServer[PerplexityUpstream]


def items_of(value: Any) -> list[Any]:
    """What the upstream embeds for one ``input`` value, one item per vector."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]
    return list(value)


def standard_models(oai: str, pplx: str) -> dict[str, Any]:
    """The usual aliases: ``oai`` and ``pplx`` are the fakes' base URLs."""
    return {
        # OpenAI-style with native dimensions; asks the upstream for base64 (the default).
        "oai-small": {
            "provider": "openai",
            "base_url": f"{oai}/v1",
            "model": "text-embedding-3-small",
            "api_key": OAI_KEY,
            "price_per_million_tokens": OAI_PRICE,
        },
        # OpenAI-style, upstream speaks float only; no native dimensions: the gateway truncates.
        "oai-mini": {
            "provider": "openai",
            "base_url": f"{oai}/v1",
            "model": "fake-minilm",
            "api_key": OAI_KEY,
            "matryoshka": True,
            "encoding": "float",
            "price_per_million_tokens": OAI_PRICE,
        },
        "pplx": {
            "provider": "perplexity",
            "base_url": pplx,
            "model": "pplx-embed-v1-0.6b",
            "api_key": PPLX_KEY,
            # Perplexity reports its own cost; this price must not replace it.
            "price_per_million_tokens": 99.0,
        },
        "pplx-ctx": {
            "provider": "perplexity",
            "base_url": pplx,
            "model": "pplx-embed-context-v1-0.6b",
            "api_key": PPLX_KEY,
        },
    }


@dataclass
class Stack:
    """The fakes and the gateway of one test module."""

    gateway: str
    oai: OAIServer
    pplx: PplxServer
    extra: dict[str, RunningServer[Any]] = field(default_factory=dict)

    def reset(self) -> None:
        self.oai.app.reset()
        self.pplx.app.reset()
        for server in self.extra.values():
            server.app.reset()

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway}/v1", api_key="x", max_retries=0, timeout=30)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway, timeout=30)


def _without_breakers(models: dict[str, Any]) -> None:
    """One gateway serves a whole module of fault tests: its circuits must not open across
    tests (an open circuit answers 503 untried), unless a test sets its own."""
    for alias in models.values():
        for deployment in alias.get("deployments", [alias]):
            deployment.setdefault("breaker_failures", 0)


@contextmanager
def upstream_stack(
    more_models: Callable[[str, str, dict[str, str]], dict[str, Any]] | None = None,
    *,
    extra_upstreams: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """Start the fakes (plus ``extra_upstreams``: name → fake app) and a gateway over them.

    ``more_models(oai_url, pplx_url, extra_urls)`` adds aliases to :func:`standard_models`.
    """
    with ExitStack() as stack:
        oai = stack.enter_context(run_in_thread(OpenAIUpstream(api_key=OAI_KEY)))
        pplx = stack.enter_context(run_in_thread(PerplexityUpstream(api_key=PPLX_KEY)))
        extra = {
            name: stack.enter_context(run_in_thread(app)) for name, app in (extra_upstreams or {}).items()
        }
        models = standard_models(oai.base_url, pplx.base_url)
        if more_models is not None:
            models.update(more_models(oai.base_url, pplx.base_url, {n: s.base_url for n, s in extra.items()}))
        _without_breakers(models)
        config = parse_config({"models": models, "usage": {"ledger": "off"}}, env={})
        gateway = stack.enter_context(run_in_thread(create_app(config), lifespan="on"))
        yield Stack(gateway.base_url, oai, pplx, extra)


# -- decoding and comparing -------------------------------------------------------------


def decode(encoding: str, value: Any, dims: int) -> np.ndarray:
    """One embedding as the client got it: float32 for float/base64, int8 or unpacked bits."""
    if encoding == "float":
        assert isinstance(value, list), f"float embedding is {type(value).__name__}"
        return np.asarray(value, dtype=np.float32)
    assert isinstance(value, str), f"{encoding} embedding is {type(value).__name__}"
    raw = base64.b64decode(value, validate=True)
    if encoding == "base64":
        assert len(raw) == 4 * dims
        return np.frombuffer(raw, dtype="<f4")
    if encoding == "base64_int8":
        assert len(raw) == dims
        return np.frombuffer(raw, dtype=np.int8)
    assert encoding == "base64_binary"
    assert len(raw) == dims // 8
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_vectors(
    encoding: str, embeddings: Sequence[Any], expected: np.ndarray, *, exact: bool
) -> None:
    """Each returned embedding against its expected float vector (rows of ``expected``).

    ``exact``: the float path loses nothing (float32 in, float32 out); otherwise the
    floats were rebuilt from int8 and must be within cosine 0.999.
    """
    assert len(embeddings) == len(expected)
    dims = expected.shape[1]
    for row, (value, want) in enumerate(zip(embeddings, expected)):
        got = decode(encoding, value, dims)
        assert got.shape == (dims,), f"row {row}: shape {got.shape}"
        if encoding in ("float", "base64"):
            if exact:
                np.testing.assert_allclose(got, want, atol=2e-6, err_msg=f"row {row}")
            else:
                assert cosine(got, want) >= 0.999, f"row {row}: cosine {cosine(got, want)}"
                assert abs(np.linalg.norm(got) - 1.0) < 1e-3
        elif encoding == "base64_int8":
            assert int(np.abs(got.astype(np.int16)).max()) == 127
            assert cosine(got.astype(np.float32) / 127.0, want) >= 0.999, f"row {row}"
        else:
            assert np.array_equal(got.astype(bool), want > 0), f"row {row}: sign pattern differs"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error

