"""Breakers that help: a deployment being probed is a last resort, not a reason for a 502;
with every circuit open requests fail fast; a provider's unforeseen error fails over and
counts against its breaker. Real gateway, real fake upstreams on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.server import RunningServer, run_in_thread
from gateway.app import create_app
from gateway.runtime import Runtime, build_runtime

Server = RunningServer[OpenAIUpstream]
TEXTS = ["one", "two"]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Server, Server]]:
    with run_in_thread(OpenAIUpstream()) as primary, run_in_thread(OpenAIUpstream()) as secondary:
        yield primary, secondary


@pytest.fixture
def fakes(upstreams: tuple[Server, Server]) -> tuple[Server, Server]:
    for server in upstreams:
        server.app.reset()
    return upstreams


def remote(name: str, server: Server, **keys: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "base_url": f"{server.base_url}/v1", "model": "fake-minilm", "space": "fake-minilm", **keys}


@contextmanager
def gateway(models: dict[str, Any], runtime: Runtime | None = None) -> Iterator[httpx.Client]:
    config = make_config(models)
    app = create_app(config, runtime=runtime or build_runtime(config))
    with run_in_thread(app, lifespan="on", startup_timeout=60) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            yield client


def embed(client: httpx.Client, model: str = "fam") -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": model, "input": TEXTS})


def circuit(client: httpx.Client, name: str) -> str:
    state: str = client.get("/readyz").json()["deployments"][name]["circuit"]
    return state


def wait_for(condition: Any, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_a_deployment_being_probed_serves_instead_of_a_502(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    keys = {"breaker_failures": 1, "breaker_cooldown_s": 0.05}
    models = {"fam": {"routing": "fallback", "timeout_s": 20,
                      "deployments": [remote("primary", primary, **keys), remote("secondary", secondary)]}}
    primary.app.faults.add("status", status=503)
    with gateway(models) as client:
        assert embed(client).headers["x-gateway-deployment"] == "secondary"  # the primary's circuit opens
        wait_for(lambda: circuit(client, "primary") == "half-open", "the cooldown ends")
        # The next request takes the probe, and the primary holds it for a while.
        primary.app.faults.add("delay", seconds=2.0)
        probe: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: probe.append(embed(client)))
        thread.start()
        wait_for(lambda: primary.app.log.in_flight == 1, "the probe reaches the primary")
        # Meanwhile the secondary fails: the primary, being probed, is the last resort.
        secondary.app.faults.add("status", status=502, times=None)
        response = embed(client)
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-deployment"] == "primary"
        thread.join(30)
        assert probe[0].status_code == 200


def test_with_every_circuit_open_requests_fail_fast(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    keys = {"breaker_failures": 1, "breaker_cooldown_s": 600, "timeout_s": 0.3}
    models = {"fam": {"routing": "fallback", "timeout_s": 10,
                      "deployments": [remote("primary", primary, **keys), remote("secondary", secondary, **keys)]}}
    for server in fakes:
        server.app.faults.add("hang", times=None)
    with gateway(models) as client:
        first = embed(client)  # both hang past their timeout_s, and both circuits open
        assert first.status_code == 504
        assert circuit(client, "primary") == circuit(client, "secondary") == "open"
        calls = primary.app.log.count + secondary.app.log.count
        responses = [embed(client) for _ in range(5)]
        for response in responses:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "no_deployment_available"
            assert 500 <= int(response.headers["retry-after"]) <= 600
        # Not one call was sent to a hanging upstream: nothing waited for a timeout.
        assert primary.app.log.count + secondary.app.log.count == calls


def test_an_unforeseen_provider_error_fails_over_and_opens_the_breaker(
    fakes: tuple[Server, Server], caplog: pytest.LogCaptureFixture
) -> None:
    primary, secondary = fakes
    models = {"fam": {"routing": "fallback",
                      "deployments": [remote("primary", primary, breaker_failures=2), remote("secondary", secondary)]},
              "solo": remote("solo", primary)}
    runtime = build_runtime(make_config(models))

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("http://user:sk-secret@host: a detail no one foresaw")

    for deployment in runtime.deployments:
        if deployment.name in ("primary", "solo"):
            deployment.provider.embed = broken  # type: ignore[method-assign]
    with gateway(models, runtime) as client:
        for _ in range(2):
            response = embed(client)
            assert response.status_code == 200
            assert response.headers["x-gateway-deployment"] == "secondary"
        assert circuit(client, "primary") == "open"
        alone = embed(client, model="solo")
        assert alone.status_code == 502
        assert "ValueError" in alone.json()["error"]["message"]
    assert "sk-secret" not in caplog.text and "sk-secret" not in alone.text
