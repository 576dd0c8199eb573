"""A bug inside the gateway still gets OpenAI's error shape: a JSON 500, one log line, no traceback.

The bugs are injected by replacing one handler or service method with one that raises,
on a real app served by real uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from conftest import make_config
from fakes.server import run_in_thread
from gateway.app import create_app
from gateway.http.api import ApiHandlers
from gateway.service import EmbeddingService

MODELS = {"remote": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "dimensions": 8}}


@contextmanager
def gateway() -> Iterator[httpx.Client]:
    app = create_app(make_config(MODELS))
    with run_in_thread(app, lifespan="on", startup_timeout=30) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            yield client


async def _bug(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug with a secret-looking detail sk-123")


def assert_internal_error(response: httpx.Response, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] == "internal error; the gateway logged it"
    request_id = response.headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert lines == [f"internal error (request {request_id}): RuntimeError"]
    assert "Traceback" not in caplog.text and "sk-123" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)


def test_a_bug_in_the_embeddings_route(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(EmbeddingService, "embed", _bug)
    caplog.set_level(logging.INFO)
    with gateway() as client:
        response = client.post("/v1/embeddings", json={"model": "remote", "input": "hi"})
        assert_internal_error(response, caplog)
        assert client.get("/healthz").status_code == 200  # the connection and server carry on


def test_a_bug_in_a_starlette_route(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ApiHandlers, "models", _bug)
    caplog.set_level(logging.INFO)
    with gateway() as client:
        response = client.get("/v1/models")
        assert_internal_error(response, caplog)
        assert client.get("/healthz").status_code == 200
