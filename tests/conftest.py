"""Shared fixtures: the real gateway on the real bundled model, served by real uvicorn."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import openai
import pytest

from fakes.server import run_in_thread
from upstream_support import Stack
from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

REFERENCE_PATH = Path(__file__).resolve().parent / "data" / "all-MiniLM-L6-v2.json"

LOCAL_MODELS: dict[str, Any] = {
    "mini": {"provider": "onnx", "model": "all-MiniLM-L6-v2"},
    "mini-matryoshka": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "matryoshka": True},
    # The model's own WordPiece ids (the default reads token ids as cl100k_base).
    "mini-native": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "token_ids": "native"},
    "mini-refuse": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "token_ids": "refuse"},
    # Named as Perplexity names its models (its SDK checks), answering as Perplexity does.
    "pplx-embed-v1-0.6b": {
        "provider": "onnx", "model": "all-MiniLM-L6-v2", "default_encoding_format": "base64_int8",
    },
    "mini-strict": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "truncate": False},
    "mini-small": {
        "provider": "onnx",
        "model": "all-MiniLM-L6-v2",
        "max_inputs": 4,
        "max_request_tokens": 40,
    },
}


def make_config(models: dict[str, Any], **sections: Any) -> GatewayConfig:
    return parse_config({"models": models, "usage": {"ledger": "off"}, **sections}, env={})


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    if not REFERENCE_PATH.exists():
        pytest.fail(f"reference vectors missing at {REFERENCE_PATH}")
    data: dict[str, Any] = json.loads(REFERENCE_PATH.read_text())
    return data


@pytest.fixture(scope="session")
def local_gateway() -> Iterator[str]:
    """Base URL of a real uvicorn server running the gateway over the bundled model."""
    app = create_app(make_config(LOCAL_MODELS))
    with run_in_thread(app, lifespan="on", startup_timeout=60) as server:
        yield server.base_url


@pytest.fixture()
def client(local_gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_gateway, timeout=60) as http:
        yield http


#: Where tiktoken itself fetches cl100k_base (LangChain, on the client side, asks it for it).
TIKTOKEN_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture()
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's own cache, seeded with the verified file: LangChain (a client) asks tiktoken
    for cl100k_base, and this machine has no network."""
    from gateway.tokens import read_cl100k_file

    name = hashlib.sha1(TIKTOKEN_CL100K_URL.encode()).hexdigest()
    (tmp_path / name).write_bytes(read_cl100k_file())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# Fixtures of the upstream test modules (tests/test_upstream_*.py), each of which
# defines its own module-scoped ``stack`` (see upstream_support.py).


@pytest.fixture()
def gw(stack: Stack) -> Iterator[Stack]:
    """The module's stack with the fakes' faults and logs reset around this test."""
    stack.reset()
    yield stack
    stack.reset()


@pytest.fixture(scope="module")
def sdk(stack: Stack) -> Iterator[openai.OpenAI]:
    with stack.sdk() as client:
        yield client


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http() as client:
        yield client
