"""Several gateway processes sharing Redis and PostgreSQL, as users run them.

Each test starts real ``serve`` processes (tests/serving.py) against real servers
(tests/services.py): rate limits admitted across processes, a circuit opened by one seen
by the other, one PostgreSQL ledger written by two processes while one is stopped under
load, ``serve --workers 2`` (one port, totals in /metrics, a killed worker replaced), and
Redis or PostgreSQL killed mid-load while requests keep being answered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psycopg
import pytest

from serving import LOCAL, free_port, serve, stop, write_config
from services import PrivatePostgres, PrivateRedis, private_database, redis_url, unique

KEY = "sk-gw-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


def config(tmp_path: Path, name: str = "gateway.yaml", **sections: Any) -> Path:
    body: dict[str, Any] = {"models": {"mini": LOCAL}, "usage": {"ledger": "off"}}
    body.update(sections)
    return write_config(tmp_path / name, body)


def embed(client: httpx.Client, text: str = "hello", **headers: str) -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": "mini", "input": text}, headers={**AUTH, **headers})


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Waits until ``condition()`` holds (the limit only ends a hung test)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def metric(base: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_processes_sharing_redis_admit_one_rpm_limit_between_them(tmp_path: Path) -> None:
    path = config(
        tmp_path, state=redis_url(), state_prefix=unique("test-") + ":",
        auth={"keys": [{"id": "app", "key": KEY, "rpm": 60}]},
    )
    with serve(path) as (_, a), serve(path) as (_, b):
        admitted = refused = 0
        started = time.monotonic()
        with httpx.Client(base_url=a, timeout=30) as first, httpx.Client(base_url=b, timeout=30) as second:
            for i in range(150):
                status = embed(first if i % 2 else second).status_code
                assert status in (200, 429)
                admitted += status == 200
                refused += status == 429
        elapsed = time.monotonic() - started
    # The bucket holds 60 and refills one a second while the test runs; one request of
    # slack per process. Two in-memory limiters would have admitted about 120.
    assert 60 <= admitted <= 60 + int(elapsed) + 1 + 2, (admitted, elapsed)
    assert refused == 150 - admitted


def test_a_circuit_opened_by_one_process_is_skipped_by_the_other(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    models = {
        "remote": {
            "routing": "fallback",
            "deployments": [
                {"name": "down-upstream", "provider": "openai", "base_url": dead, "model": "text-embedding-3-small",
                 "api_key": "sk-x", "breaker_failures": 1, "breaker_cooldown_s": 120},
            ],
        },
        "mini": LOCAL,
    }
    path = config(tmp_path, models=models, state=redis_url(), state_prefix=unique("test-") + ":")
    with serve(path) as (_, a), serve(path) as (_, b):
        def circuit(base: str) -> str:
            return str(httpx.get(f"{base}/readyz").json()["deployments"]["down-upstream"]["circuit"])

        assert circuit(b) == "closed"
        response = httpx.post(f"{a}/v1/embeddings", json={"model": "remote", "input": "x"}, timeout=30)
        assert response.status_code in (502, 503, 504)
        assert circuit(a) == "open"
        wait_for(lambda: circuit(b) == "open", "process B adopting the circuit A opened")
        assert metric(b, "gateway_circuit_state") == 2


def _load(bases: list[str], answered: list[str], stop_event: threading.Event, errors: list[str]) -> None:
    """Sends requests round-robin until told to stop; records the request id of every answer."""
    clients = [httpx.Client(base_url=base, timeout=30) for base in bases]
    i = 0
    try:
        while not stop_event.is_set():
            request_id = unique("req-")
            try:
                response = embed(clients[i % len(clients)], f"text {i}", **{"x-request-id": request_id})
            except httpx.TransportError:
                pass  # a process that is stopping may refuse the connection: no answer, no row owed
            else:
                if response.status_code == 200:
                    answered.append(request_id)
                else:
                    errors.append(f"{response.status_code} {response.text[:200]}")
            i += 1
    finally:
        for client in clients:
            client.close()


def _ledger_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM usage")}


def test_two_processes_write_one_postgresql_ledger_and_sigterm_loses_no_row(tmp_path: Path) -> None:
    with private_database() as url:
        path = config(tmp_path, usage={"ledger": url})
        with serve(path) as (first, a), serve(path) as (second, b):
            answered: list[str] = []
            errors: list[str] = []
            done = threading.Event()
            loaders = [threading.Thread(target=_load, args=([a, b], answered, done, errors)) for _ in range(3)]
            for thread in loaders:
                thread.start()
            wait_for(lambda: len(answered) >= 40, "40 answered requests")
            stop(first)  # SIGTERM under load: it finishes its requests and flushes its rows
            count = len(answered)
            wait_for(lambda: len(answered) >= count + 20, "20 more answers from the other process")
            done.set()
            for thread in loaders:
                thread.join()
            stop(second)
        assert not errors, errors[:3]
        missing = set(answered) - _ledger_ids(url)
        assert not missing, f"{len(missing)} answered requests have no ledger row"


def _worker_pids(parent: int) -> set[int]:
    pids = set()
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"multiprocessing.spawn" in cmdline or b"spawn_main" in cmdline:
            if b"resource_tracker" not in cmdline:
                pids.add(int(child))
    return pids


def test_serve_workers_2_shares_a_port_totals_metrics_and_replaces_a_dead_worker(tmp_path: Path) -> None:
    db = tmp_path / "usage.db"
    path = config(tmp_path, usage={"ledger": f"sqlite:///{db}"})
    with serve(path, "--workers", "2") as (process, base):
        wait_for(lambda: len(_worker_pids(process.pid)) == 2, "two workers")
        workers = _worker_pids(process.pid)
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(40):
                assert embed(client, f"t{i}").status_code == 200
        # Whichever worker answers the scrape reports both workers' requests.
        wait_for(lambda: metric(base, "gateway_requests_total") == 40, "/metrics totalling both workers")
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(_worker_pids(process.pid) - {victim}) == 2, "a replacement worker")
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, "ready again")
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(10):
                assert embed(client, f"after {i}").status_code == 200
        # The dead worker's requests still count: a counter never goes down.
        wait_for(lambda: metric(base, "gateway_requests_total") == 50, "totals after the restart")
        out, err = stop(process)
    assert "Child process" in err and "died" in err


def test_sigterm_of_serve_workers_2_under_load_loses_no_ledger_row(tmp_path: Path) -> None:
    from serving import ledger_rows

    db = tmp_path / "usage.db"
    path = config(tmp_path, usage={"ledger": f"sqlite:///{db}"})
    with serve(path, "--workers", "2") as (process, base):
        answered: list[str] = []
        errors: list[str] = []
        done = threading.Event()
        loaders = [threading.Thread(target=_load, args=([base], answered, done, errors)) for _ in range(3)]
        for thread in loaders:
            thread.start()
        wait_for(lambda: len(answered) >= 40, "40 answered requests")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        done.set()
        for thread in loaders:
            thread.join()
        stop(process)
    assert not errors, errors[:3]
    missing = set(answered) - set(ledger_rows(db))
    assert not missing, f"{len(missing)} answered requests have no ledger row"


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def test_redis_killed_mid_load_requests_keep_succeeding(tmp_path: Path, private_redis: PrivateRedis) -> None:
    path = config(
        tmp_path, state=private_redis.url, state_prefix="t:",
        auth={"keys": [{"id": "app", "key": KEY, "rpm": 100000}]},
    )
    with serve(path) as (process, base), httpx.Client(base_url=base, timeout=30) as client:
        assert embed(client).headers["x-ratelimit-limit-requests"] == "100000"
        private_redis.stop()
        for i in range(20):
            response = embed(client, f"while down {i}")
            assert response.status_code == 200  # fails open: served, unchecked
        assert metric(base, "gateway_state_up") == 0
        assert metric(base, "gateway_ratelimit_unchecked_total") >= 19
        private_redis.start()
        wait_for(lambda: "x-ratelimit-limit-requests" in embed(client).headers, "limits checked again")
        assert metric(base, "gateway_state_up") == 1
        _, err = stop(process)
    assert "STATE DOWN" in err and "reachable again" in err


def test_postgresql_killed_mid_load_requests_keep_succeeding_and_rows_catch_up(tmp_path: Path) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        path = config(tmp_path, usage={"ledger": server.url})
        with serve(path) as (process, base), httpx.Client(base_url=base, timeout=30) as client:
            ids = [unique("req-") for _ in range(30)]
            for request_id in ids[:10]:
                assert embed(client, **{"x-request-id": request_id}).status_code == 200
            wait_for(lambda: metric(base, "gateway_ledger_rows_written_total") >= 10, "first rows written")
            server.stop()
            for request_id in ids[10:20]:
                assert embed(client, **{"x-request-id": request_id}).status_code == 200
            wait_for(lambda: metric(base, "gateway_ledger_write_errors_total") >= 1, "a failed write")
            assert metric(base, "gateway_ledger_pending_rows") >= 1
            server.start()
            for request_id in ids[20:]:
                assert embed(client, **{"x-request-id": request_id}).status_code == 200
            wait_for(lambda: metric(base, "gateway_ledger_pending_rows") == 0, "the buffered rows written")
            stop(process)
        assert set(ids) <= _ledger_ids(server.url)
    finally:
        server.remove()
