"""Routing that survives failures: the real gateway in front of two fake upstreams on
loopback (and the real local model), each failure mode in turn; then the Router on its
own for the strategies, backoff, deadlines and the space pin. No assertion is on time."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import cosine, make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import fake_vector
from gateway.app import create_app
from gateway.errors import NoDeploymentAvailable
from gateway.usage.metrics import Metrics
from gateway.routing.router import Router, SpacePin
from gateway.runtime import AliasRuntime, DeploymentRuntime, build_runtime
from providers.base import (
    EmbeddingResult,
    InvalidInput,
    ProviderTimeout,
    ProviderUnavailable,
    UpstreamResponseError,
)

MINI = "fake-minilm"
DIMS = 384
TEXTS = ["the first text", "a second one", "and a third"]
Server = RunningServer[OpenAIUpstream]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Server, Server]]:
    with run_in_thread(OpenAIUpstream()) as primary, run_in_thread(OpenAIUpstream()) as secondary:
        yield primary, secondary


@pytest.fixture
def fakes(upstreams: tuple[Server, Server]) -> tuple[Server, Server]:
    for server in upstreams:
        server.app.reset()
    return upstreams


def remote(name: str, base_url: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "base_url": f"{base_url}/v1", "model": MINI, "space": MINI, **keys}


def pair(fakes: tuple[Server, Server], deployment_keys: dict[str, Any] | None = None, **alias: Any) -> dict[str, Any]:
    primary, secondary = fakes
    keys = deployment_keys or {}
    return {
        "fam": {
            "routing": "fallback",
            "timeout_s": 5,
            **alias,
            "deployments": [remote("primary", primary.base_url, **keys), remote("secondary", secondary.base_url, **keys)],
        }
    }


@contextmanager
def gateway(models: dict[str, Any]) -> Iterator[httpx.Client]:
    app = create_app(make_config(models))
    with run_in_thread(app, lifespan="on", startup_timeout=60) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            yield client


def embed(client: httpx.Client, texts: list[str] = TEXTS, model: str = "fam") -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": model, "input": texts})


def assert_fake_vectors(response: httpx.Response, texts: list[str] = TEXTS) -> None:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(len(texts)))
    for item, text in zip(data, texts):
        assert np.allclose(item["embedding"], fake_vector(text, DIMS), atol=1e-6)


def received(server: Server) -> int:
    return server.app.log.count


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_deployment_named_outside_latin_1_still_answers(fakes: tuple[Server, Server]) -> None:
    primary, _ = fakes
    models = {"fam": {"deployments": [remote("東京-primary", primary.base_url)]}}
    with gateway(models) as client:
        response = embed(client)
    assert_fake_vectors(response)
    sent = dict(response.headers.raw)[b"x-gateway-deployment"]
    assert sent.decode("utf-8") == "東京-primary"


# Each failure mode: the fault, and the status when every deployment fails that way.
FAILURES = [
    pytest.param("status", {"status": 500}, 502, id="500"),
    pytest.param("status", {"status": 503}, 503, id="503"),
    pytest.param("status", {"status": 429, "retry_after": "1"}, 429, id="429-retry-after"),
    pytest.param("hang", {}, 504, id="hang"),
    pytest.param("drop", {}, 502, id="drop"),
    pytest.param("drop", {"when": "mid_body"}, 502, id="drop-mid-body"),
    pytest.param("invalid_json", {}, 502, id="invalid-json"),
    pytest.param("wrong_count", {}, 502, id="wrong-count"),
]
SHORT = {"timeout_s": 0.3}  # the deployments' per-attempt timeout, for the hangs


@pytest.mark.parametrize("mode, params, status", FAILURES)
def test_a_failing_deployment_is_failed_over(
    fakes: tuple[Server, Server], mode: str, params: dict[str, Any], status: int
) -> None:
    primary, secondary = fakes
    primary.app.faults.add(mode, times=None, **params)
    with gateway(pair(fakes, SHORT)) as client:
        response = embed(client)
    assert_fake_vectors(response)
    assert response.headers["x-gateway-deployment"] == "secondary"
    assert response.headers["x-gateway-attempts"] == "2"
    assert received(primary) == 1 and received(secondary) == 1


@pytest.mark.parametrize("mode, params, status", FAILURES)
def test_when_every_deployment_fails_the_answer_says_how(
    fakes: tuple[Server, Server], mode: str, params: dict[str, Any], status: int
) -> None:
    for server in fakes:
        server.app.faults.add(mode, times=None, **params)
    with gateway(pair(fakes, SHORT, timeout_s=3)) as client:
        response = embed(client)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if status == 429:
        assert response.headers["retry-after"] == "1"
    assert all(received(server) == 1 for server in fakes)


def test_retries_stay_on_the_same_deployment(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", times=2, status=500)
    with gateway(pair(fakes, retries=2)) as client:
        response = embed(client)
    assert_fake_vectors(response)
    assert response.headers["x-gateway-deployment"] == "primary"
    assert response.headers["x-gateway-attempts"] == "3"
    assert received(secondary) == 0


def test_a_short_retry_after_is_waited_for_and_a_long_one_moves_on(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", status=429, retry_after_ms=20)
    with gateway(pair(fakes, retries=1)) as client:
        response = embed(client)
        assert response.headers["x-gateway-deployment"] == "primary"
        assert received(primary) == 2 and received(secondary) == 0
        primary.app.faults.add("status", status=429, retry_after="60")  # longer than the deadline
        response = embed(client)
    assert_fake_vectors(response)
    assert response.headers["x-gateway-deployment"] == "secondary"
    assert received(primary) == 3 and received(secondary) == 1


def test_input_errors_are_neither_retried_nor_failed_over(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", times=None, status=400, message="input[1] is too long")
    with gateway(pair(fakes, retries=2)) as client:
        response = embed(client)
    assert response.status_code == 400
    assert "too long" in response.json()["error"]["message"]
    assert received(primary) == 1 and received(secondary) == 0


def test_refused_credentials_fail_over_without_a_retry(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", times=None, status=401)
    with gateway(pair(fakes, retries=2)) as client:
        response = embed(client)
    assert_fake_vectors(response)
    assert response.headers["x-gateway-deployment"] == "secondary"
    assert received(primary) == 1


def test_the_deadline_bounds_the_request(fakes: tuple[Server, Server]) -> None:
    for server in fakes:
        server.app.faults.add("hang", times=None)
    # Each deployment would wait 30 s; the alias's deadline cuts the first one short.
    with gateway(pair(fakes, timeout_s=0.5, retries=3)) as client:
        response = embed(client)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_an_open_breaker_skips_the_deployment_then_probes_it(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", times=None, status=503)
    keys = {"breaker_failures": 2, "breaker_cooldown_s": 0.2}
    with gateway(pair(fakes, keys)) as client:
        for _ in range(2):
            assert embed(client).headers["x-gateway-attempts"] == "2"
        assert received(primary) == 2
        skipped = embed(client)
        assert skipped.headers["x-gateway-attempts"] == "1"
        assert received(primary) == 2  # open: not even tried
        primary.app.faults.reset()
        # After the cooldown one probe goes to the primary, and its success closes the breaker.
        for _ in range(200):
            response = embed(client)
            if response.headers["x-gateway-deployment"] == "primary":
                break
            time.sleep(0.01)
        assert response.headers["x-gateway-deployment"] == "primary"
        assert embed(client).headers["x-gateway-deployment"] == "primary"


def test_when_every_breaker_is_open_requests_fail_fast_untried(fakes: tuple[Server, Server]) -> None:
    primary, _ = fakes
    primary.app.faults.add("status", status=503)
    models = {"solo": remote("primary", primary.base_url, breaker_failures=1, breaker_cooldown_s=60)}
    with gateway(models) as client:
        assert embed(client, model="solo").status_code == 503
        response = embed(client, model="solo")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_deployment_available"
    assert "retry-after" in response.headers
    assert received(primary) == 1  # the open circuit kept the second request off it


def test_the_local_model_serves_when_the_remote_is_down(reference: dict[str, Any]) -> None:
    models = {
        "mini": {
            "retries": 1,
            "deployments": [
                {
                    "name": "tei",
                    "provider": "openai",
                    "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                    "model": "sentence-transformers/all-MiniLM-L6-v2",
                    "space": "all-MiniLM-L6-v2",
                },
                {"name": "local", "provider": "onnx", "model": "all-MiniLM-L6-v2", "space": "all-MiniLM-L6-v2"},
            ],
        }
    }
    items = reference["items"][:3]
    with gateway(models) as client:
        response = embed(client, [item["text"] for item in items], model="mini")
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-deployment"] == "local"
    assert response.headers["x-gateway-provider"] == "onnx"
    assert response.headers["x-gateway-attempts"] == "3"
    for item, got in zip(items, response.json()["data"]):
        assert cosine(got["embedding"], item["embedding"]) >= 0.99


def test_the_batches_of_one_request_stay_in_one_space(fakes: tuple[Server, Server]) -> None:
    primary, secondary = fakes
    primary.app.faults.add("status", status=503)  # one batch of three fails at the primary
    models = {
        "mixed": {
            "allow_mixed_spaces": True,
            "deployments": [
                remote("primary", primary.base_url, space="a", max_inputs=1),
                remote("secondary", secondary.base_url, space="b", max_inputs=1),
            ],
        }
    }
    with gateway(models) as client:
        response = embed(client, model="mixed")
    # Either every batch moved to the other space, or the request failed: never a mix.
    assert response.status_code in (200, 503), response.text
    if response.status_code == 200:
        assert response.headers["x-gateway-deployment"] in ("primary", "secondary")


# -- the Router on its own ------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def alias_of(deployments: list[dict[str, Any]], **alias: Any) -> AliasRuntime:
    full = [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": MINI, **d} for d in deployments]
    return build_runtime(make_config({"a": {"deployments": full, **alias}})).aliases["a"]


def result(rows: int = 1) -> EmbeddingResult:
    return EmbeddingResult(vectors=np.zeros((rows, 4), dtype=np.float32), token_counts=[1] * rows)


def test_weighted_draws_follow_the_weights() -> None:
    alias = alias_of([{"name": "big", "weight": 3}, {"name": "small", "weight": 1}], routing="weighted")
    router = Router(rng=random.Random(7))
    firsts = Counter(router.order(alias)[0].name for _ in range(4000))
    assert 0.70 < firsts["big"] / 4000 < 0.80
    assert [d.name for d in router.order(alias)] in (["big", "small"], ["small", "big"])


@pytest.mark.anyio
async def test_least_busy_picks_the_idle_deployment() -> None:
    alias = alias_of([{"name": "one"}, {"name": "two"}], routing="least-busy")
    router = Router()
    release = asyncio.Event()

    async def slow(deployment: DeploymentRuntime) -> EmbeddingResult:
        await release.wait()
        return result()

    first = asyncio.create_task(router.run(alias, slow))
    await asyncio.sleep(0)
    assert [d.in_flight for d in alias.deployments] == [1, 0]
    second = asyncio.create_task(router.run(alias, slow))
    await asyncio.sleep(0)
    release.set()
    served = [(await first).deployment.name, (await second).deployment.name]
    assert served == ["one", "two"]
    assert [d.in_flight for d in alias.deployments] == [0, 0]


@pytest.mark.anyio
async def test_backoff_waits_grow_and_retry_after_is_honoured() -> None:
    alias = alias_of([{"name": "one"}, {"name": "two"}], retries=3, timeout_s=10)
    fake = FakeTime()
    router = Router(rng=random.Random(1), clock=fake.clock, sleep=fake.sleep)
    errors = [
        UpstreamResponseError("boom", status=500),
        UpstreamResponseError("boom", status=502),
        ProviderUnavailable("busy", retry_after=1.5, status=503),
    ]
    calls: list[str] = []

    async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
        calls.append(deployment.name)
        if errors:
            raise errors.pop(0)
        return result()

    routed = await router.run(alias, attempt)
    assert routed.deployment.name == "one" and routed.attempts == 4 and routed.fallbacks == 0
    assert 0 <= fake.slept[0] <= 0.05 and 0 <= fake.slept[1] <= 0.1 and fake.slept[2] == 1.5
    # A Retry-After past the deadline moves on at once, without waiting.
    fake.slept.clear()
    errors[:] = [ProviderUnavailable("busy", retry_after=60, status=503)]
    routed = await router.run(alias, attempt)
    assert routed.deployment.name == "two" and routed.fallbacks == 1 and fake.slept == []


@pytest.mark.anyio
async def test_a_malformed_answer_moves_on_without_a_retry() -> None:
    alias = alias_of([{"name": "one"}, {"name": "two"}], retries=3)
    router = Router(sleep=FakeTime().sleep)
    calls: list[str] = []

    async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
        calls.append(deployment.name)
        if deployment.name == "one":
            raise UpstreamResponseError("the upstream answered badly: data holds 2 items, expected 3")
        return result()

    assert (await router.run(alias, attempt)).deployment.name == "two"
    assert calls == ["one", "two"]


@pytest.mark.anyio
async def test_an_exhausted_deadline_is_a_timeout() -> None:
    alias = alias_of([{"name": "one"}, {"name": "two"}], timeout_s=1)
    fake = FakeTime()
    router = Router(clock=fake.clock, sleep=fake.sleep)

    async def slow_failure(deployment: DeploymentRuntime) -> EmbeddingResult:
        fake.now += 2
        raise UpstreamResponseError("boom", status=500)

    with pytest.raises(ProviderTimeout, match="deadline"):
        await router.run(alias, slow_failure)


@pytest.mark.anyio
async def test_input_errors_propagate_and_leave_the_breaker_alone() -> None:
    alias = alias_of([{"name": "one", "breaker_failures": 1}, {"name": "two"}])
    router = Router()
    calls: list[str] = []

    async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
        calls.append(deployment.name)
        raise InvalidInput("input[0] is empty", param="input[0]")

    with pytest.raises(InvalidInput):
        await router.run(alias, attempt)
    assert calls == ["one"]
    assert router.breaker_for(alias.deployments[0]).state == "closed"


@pytest.mark.anyio
async def test_breaker_states_and_counters_reach_the_metrics() -> None:
    alias = alias_of([{"name": "one", "breaker_failures": 2}, {"name": "two"}], retries=1)
    metrics = Metrics(aliases=["a"])
    router = Router(metrics, sleep=FakeTime().sleep)

    async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
        if deployment.name == "one":
            raise ProviderUnavailable("down", status=503)
        return result()

    routed = await router.run(alias, attempt)
    assert (routed.deployment.name, routed.attempts, routed.fallbacks) == ("two", 3, 1)
    assert router.breaker_for(alias.deployments[0]).state == "open"
    text = metrics.render()[0].decode()
    assert 'gateway_circuit_state{deployment="one"} 2.0' in text
    assert 'gateway_circuit_state{deployment="two"} 0.0' in text
    assert 'gateway_retries_total{alias="a"} 1.0' in text
    assert 'gateway_fallbacks_total{alias="a"} 1.0' in text
    assert 'gateway_upstream_attempt_seconds_count{deployment="one",outcome="unavailable"} 2.0' in text


MIXED = [{"name": "x1", "space": "x"}, {"name": "y1", "space": "y"}]


@pytest.mark.anyio
async def test_a_pinned_request_never_leaves_its_space() -> None:
    alias = alias_of(MIXED, allow_mixed_spaces=True)
    router = Router()
    pin = SpacePin()
    first = await router.run(alias, lambda d: _ok(), pin=pin)
    assert first.deployment.name == "x1" and pin.space == "x"

    async def x_fails(deployment: DeploymentRuntime) -> EmbeddingResult:
        if deployment.name == "x1":
            raise ProviderUnavailable("down")
        return result()

    with pytest.raises(ProviderUnavailable):
        await router.run(alias, x_fails, pin=pin)  # y1 would answer, in the wrong space
    # A new request is free to use the other space.
    assert (await router.run(alias, x_fails, pin=SpacePin())).deployment.name == "y1"


@pytest.mark.anyio
async def test_a_batch_served_from_another_space_meanwhile_is_redone_in_the_pinned_one() -> None:
    alias = alias_of(MIXED, allow_mixed_spaces=True)
    router = Router()
    pin = SpacePin()
    x_answers = asyncio.Event()
    calls: list[tuple[int, str]] = []

    def attempt_for(batch: int) -> Any:
        async def attempt(deployment: DeploymentRuntime) -> EmbeddingResult:
            calls.append((batch, deployment.name))
            if deployment.name == "x1" and batch == 1:
                await x_answers.wait()  # slow, and succeeds only after batch 2 pinned y
            elif deployment.name == "x1":
                raise ProviderUnavailable("down")
            return result()

        return attempt

    slow = asyncio.create_task(router.run(alias, attempt_for(1), pin=pin))
    await asyncio.sleep(0)
    fast = await router.run(alias, attempt_for(2), pin=pin)
    x_answers.set()
    redone = await slow
    assert fast.deployment.name == "y1" and pin.space == "y"
    assert redone.deployment.name == "y1" and redone.attempts == 2
    assert calls == [(1, "x1"), (2, "x1"), (2, "y1"), (1, "y1")]


@pytest.mark.anyio
async def test_nothing_to_route_to_is_503() -> None:
    alias = alias_of(MIXED, allow_mixed_spaces=True)
    pin = SpacePin()
    pin.space = "z"
    with pytest.raises(NoDeploymentAvailable):
        await Router().run(alias, lambda d: _ok(), pin=pin)


async def _ok() -> EmbeddingResult:
    return result()
