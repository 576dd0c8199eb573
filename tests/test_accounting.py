"""Usage accounting end to end: ledger rows per request, /v1/usage, a sick ledger, SIGTERM under load.

Real uvicorn servers, the real bundled model, fake upstreams over real HTTP; the ledger is
read straight from its SQLite file (after ``GET /v1/usage``, which flushes the writer).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.perplexity_schema import DEFAULT_PRICES
from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import RunningServer, run_in_thread
from fakes.vectors import fake_token_count
from gateway.app import create_app
from serving import LOCAL, iso, ledger_rows, serve, stop, write_config

UPSTREAM_KEY = "sk-upstream-accounting-0123"
PPLX_KEY = "pplx-upstream-accounting-4567"
KEYS = {"app-1": "gk-accounting-app-1-secret", "app-2": "gk-accounting-app-2-secret", "tiny": "gk-accounting-tiny-secret"}
ADMIN = "gk-accounting-admin-secret"
OAI_PRICE = 0.02
PPLX_MODEL = "pplx-embed-v1-0.6b"


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def rid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[RunningServer[OpenAIUpstream], RunningServer[PerplexityUpstream]]]:
    with run_in_thread(OpenAIUpstream(api_key=UPSTREAM_KEY)) as oai, run_in_thread(PerplexityUpstream(api_key=PPLX_KEY)) as pplx:
        yield oai, pplx


def oai_alias(base_url: str) -> dict[str, Any]:
    return {"provider": "openai", "base_url": f"{base_url}/v1", "api_key": UPSTREAM_KEY,
            "model": "fake-minilm", "price_per_million_tokens": OAI_PRICE}


class Gateway:
    def __init__(self, base_url: str, db: Path) -> None:
        self.base_url, self.db = base_url, db
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def embed(self, body: dict[str, Any], *, key: str | None = "app-1", request_id: str | None = None) -> httpx.Response:
        headers = {"x-request-id": request_id or rid("req")}
        if key is not None:
            headers.update(bearer(KEYS.get(key, key)))
        return self.http.post("/v1/embeddings", json=body, headers=headers)

    def usage(self, **params: str) -> httpx.Response:
        return self.http.get("/v1/usage", params=params, headers=bearer(ADMIN))

    def rows(self, request_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        assert self.usage().status_code == 200  # flushes the writer
        return ledger_rows(self.db, request_ids)


@pytest.fixture(scope="module")
def gateway(upstreams: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    oai, pplx = upstreams
    db = tmp_path_factory.mktemp("ledger") / "usage.db"
    config = make_config(
        {
            "mini": LOCAL,
            "oai": oai_alias(oai.base_url),
            "pplx": {"provider": "perplexity", "base_url": pplx.base_url, "api_key": PPLX_KEY, "model": PPLX_MODEL},
        },
        usage={"ledger": f"sqlite:///{db}"},
        auth={
            "keys": [
                {"id": "app-1", "key": KEYS["app-1"]},
                {"id": "app-2", "key": KEYS["app-2"], "models": ["mini", "o*"]},
                {"id": "tiny", "key": KEYS["tiny"], "rpm": 1},
            ],
            "admin_keys": [ADMIN],
        },
    )
    with run_in_thread(create_app(config), lifespan="on", startup_timeout=60) as server:
        gw = Gateway(server.base_url, db)
        yield gw
        gw.http.close()


def test_each_request_gets_one_row_with_what_it_used(gateway: Gateway) -> None:
    oai_texts, pplx_texts = ["alpha beta gamma", "delta epsilon", "zeta"], ["one two", "three four five"]
    sent: dict[str, tuple[dict[str, Any], str]] = {
        rid("oai"): ({"model": "oai", "input": oai_texts, "user": "u-1", "metadata": {"team": "search", "env": "ci"}}, "app-1"),
        rid("pplx"): ({"model": "pplx", "input": pplx_texts, "encoding_format": "base64_int8"}, "app-1"),
        rid("mini"): ({"model": "mini", "input": "hello there", "user": "u-2"}, "app-2"),
    }
    responses = {request_id: gateway.embed(body, key=key, request_id=request_id) for request_id, (body, key) in sent.items()}
    assert [r.status_code for r in responses.values()] == [200, 200, 200]
    rows = gateway.rows(list(sent))
    assert set(rows) == set(sent)

    oai_id, pplx_id, mini_id = sent
    oai_tokens = sum(fake_token_count(t) for t in oai_texts)
    pplx_tokens = sum(fake_token_count(t) for t in pplx_texts)
    expected: dict[str, dict[str, Any]] = {
        oai_id: dict(key_id="app-1", alias="oai", deployment="oai", provider="openai", upstream_model="fake-minilm",
                     inputs=3, prompt_tokens=oai_tokens, total_tokens=oai_tokens, user="u-1",
                     metadata={"team": "search", "env": "ci"}),
        pplx_id: dict(key_id="app-1", alias="pplx", deployment="pplx", provider="perplexity", upstream_model=PPLX_MODEL,
                      inputs=2, prompt_tokens=pplx_tokens, total_tokens=pplx_tokens, user=None, metadata={}),
        mini_id: dict(key_id="app-2", alias="mini", deployment="mini", provider="onnx", upstream_model="all-MiniLM-L6-v2",
                      inputs=1, user="u-2", metadata={}, cost=None),
    }
    for request_id, fields in expected.items():
        row, usage = rows[request_id], responses[request_id].json()["usage"]
        assert {name: row[name] for name in fields} == fields, request_id
        assert row["status"] == 200 and row["attempts"] == 1 and row["latency_ms"] > 0
        assert (row["prompt_tokens"], row["total_tokens"]) == (usage["prompt_tokens"], usage["total_tokens"])
        assert row["cost"] == (usage["cost"]["total_cost"] if "cost" in usage else None)
    # The price comes from the config for oai, from the upstream's own report for pplx.
    assert rows[oai_id]["cost"] == pytest.approx(oai_tokens * OAI_PRICE / 1e6)
    assert rows[pplx_id]["cost"] == pytest.approx(pplx_tokens * DEFAULT_PRICES[PPLX_MODEL] / 1e6)
    assert rows[mini_id]["prompt_tokens"] > 0


def test_refused_requests_are_recorded_with_their_status(gateway: Gateway) -> None:
    no_key, bad_key, denied, bad_input, bad_dims, unknown = (rid(t) for t in ("nokey", "badkey", "denied", "input", "dims", "unknown"))
    assert gateway.embed({"model": "mini", "input": "x"}, key=None, request_id=no_key).status_code == 401
    assert gateway.embed({"model": "mini", "input": "x"}, key="gk-not-a-key", request_id=bad_key).status_code == 401
    assert gateway.embed({"model": "pplx", "input": ["a", "b"]}, key="app-2", request_id=denied).status_code == 403
    assert gateway.embed({"model": "mini", "input": ""}, request_id=bad_input).status_code == 400
    assert gateway.embed({"model": "mini", "input": "x", "dimensions": 5}, request_id=bad_dims).status_code == 400
    assert gateway.embed({"model": "nope", "input": "x"}, request_id=unknown).status_code == 404
    # rpm 1: the bucket starts full, so one request passes and the next within a minute is refused.
    limited = [rid("tiny") for _ in range(4)]
    body = {"model": "mini", "input": "x", "user": "u-9", "metadata": {"team": "t"}}
    statuses = [gateway.embed(body, key="tiny", request_id=r).status_code for r in limited]
    assert statuses[0] == 200 and 429 in statuses
    throttled = limited[statuses.index(429)]

    rows = gateway.rows([no_key, bad_key, denied, bad_input, bad_dims, unknown, throttled])
    refused: dict[str, Any] = {"deployment": None, "provider": None, "upstream_model": None, "prompt_tokens": 0,
               "total_tokens": 0, "cost": None, "attempts": 0}
    # Refused before authentication: counted in the metrics, never a row (keyless clients
    # must not be able to fill the ledger).
    assert no_key not in rows and bad_key not in rows
    expected: dict[str, dict[str, Any]] = {
        denied: dict(status=403, key_id="app-2", alias="pplx", inputs=2),
        bad_input: dict(status=400, key_id="app-1", alias="mini", inputs=0),  # refused while parsing, alias known
        bad_dims: dict(status=400, key_id="app-1", alias="mini", inputs=1),
        unknown: dict(status=404, key_id="app-1", alias="nope", inputs=1),
        throttled: dict(status=429, key_id="tiny", alias="mini", inputs=1, user="u-9", metadata={"team": "t"}),
    }
    for request_id, fields in expected.items():
        row = rows[request_id]
        assert {name: row[name] for name in {**refused, **fields}} == {**refused, **fields}, request_id


def test_a_failed_upstream_call_is_recorded_with_what_was_tried(gateway: Gateway, upstreams: Any) -> None:
    oai, _ = upstreams
    oai.app.faults.add("status", status=500)
    failed = rid("failed")
    response = gateway.embed({"model": "oai", "input": "a", "metadata": {"team": "t"}}, request_id=failed)
    assert response.status_code == 502
    row = gateway.rows([failed])[failed]
    assert (row["status"], row["deployment"], row["provider"], row["attempts"]) == (502, "oai", "openai", 1)
    assert (row["prompt_tokens"], row["cost"], row["metadata"]) == (0, None, {"team": "t"})


def test_the_ledger_holds_key_ids_never_keys(gateway: Gateway) -> None:
    assert gateway.embed({"model": "oai", "input": "a"}, key="app-2").status_code == 200
    rows = gateway.rows()
    assert {row["key_id"] for row in rows.values()} <= {None, "app-1", "app-2", "tiny"}
    raw = b"".join(p.read_bytes() for p in gateway.db.parent.glob(gateway.db.name + "*"))
    for secret in [*KEYS.values(), ADMIN, UPSTREAM_KEY, PPLX_KEY]:
        assert secret.encode() not in raw


def test_64_concurrent_requests_give_64_matching_rows(gateway: Gateway) -> None:
    async def fire() -> dict[str, tuple[dict[str, Any], httpx.Response]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60, limits=limits) as client:
            bodies = {
                rid(f"c{i}"): ({"model": ("mini", "oai")[i % 2], "input": [f"text {i} " + "word " * (i % 7)] * (1 + i % 3),
                                "user": f"user-{i % 4}", "metadata": {"n": str(i)}}, ("app-1", "app-2")[i % 2])
                for i in range(64)
            }

            async def one(request_id: str, body: dict[str, Any], key: str) -> tuple[dict[str, Any], httpx.Response]:
                response = await client.post("/v1/embeddings", json=body, headers={"x-request-id": request_id, **bearer(KEYS[key])})
                return body | {"key": key}, response

            results = await asyncio.gather(*(one(r, b, k) for r, (b, k) in bodies.items()))
            return dict(zip(bodies, results))

    sent = asyncio.run(fire())
    assert [response.status_code for _, response in sent.values()] == [200] * 64
    rows = gateway.rows(list(sent))
    assert len(rows) == 64
    for request_id, (body, response) in sent.items():
        row, usage = rows[request_id], response.json()["usage"]
        assert response.headers["x-request-id"] == request_id
        assert (row["alias"], row["deployment"], row["key_id"]) == (body["model"], body["model"], body["key"])
        assert (row["inputs"], row["user"], row["metadata"]) == (len(body["input"]), body["user"], body["metadata"])
        assert (row["prompt_tokens"], row["total_tokens"], row["status"]) == (usage["prompt_tokens"], usage["total_tokens"], 200)
        assert row["cost"] == (usage["cost"]["total_cost"] if "cost" in usage else None)


def test_usage_api_groups_by_every_dimension_within_a_window(gateway: Gateway) -> None:
    tag = uuid.uuid4().hex[:8]
    gateway.rows()  # everything answered so far is written before the window opens
    t0 = time.time()
    plan = [  # (key, alias, user, team, inputs)
        ("app-1", "mini", "alice", f"a-{tag}", 2),
        ("app-1", "mini", "alice", f"a-{tag}", 1),
        ("app-1", "oai", "bob", f"b-{tag}", 3),
        ("app-2", "oai", None, f"a-{tag}", 1),
    ]
    usages = []
    for key, alias, user, team, n in plan:
        body: dict[str, Any] = {"model": alias, "input": [f"{team} words here {i}" for i in range(n)], "metadata": {"team": team}}
        if user:
            body["user"] = user
        response = gateway.embed(body, key=key)
        assert response.status_code == 200
        usages.append(response.json()["usage"])
    gateway.rows()
    t1 = time.time()
    window = {"start": iso(t0), "end": iso(t1)}

    def expect(column: int) -> dict[Any, dict[str, Any]]:
        groups: dict[Any, dict[str, Any]] = {}
        for entry, usage in zip(plan, usages):
            g = groups.setdefault(entry[column], {"requests": 0, "inputs": 0, "prompt_tokens": 0, "total_tokens": 0, "cost": 0.0})
            g["requests"] += 1
            g["inputs"] += entry[4]
            g["prompt_tokens"] += usage["prompt_tokens"]
            g["total_tokens"] += usage["total_tokens"]
            g["cost"] += usage.get("cost", {}).get("total_cost", 0.0)
        return groups

    for group_by, column in [("key", 0), ("alias", 1), ("deployment", 1), ("user", 2), ("metadata.team", 3)]:
        response = gateway.usage(group_by=group_by, **window)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["object"], body["group_by"]) == ("list", group_by)
        got = {row.pop("group"): row for row in body["data"]}
        want = expect(column)
        assert set(got) == set(want), group_by
        for group, sums in want.items():
            assert got[group] == {
                **sums, "cost": pytest.approx(sums["cost"]), "cached_inputs": 0, "cached_tokens": 0, "cost_saved": 0.0,
            }, (group_by, group)

    # Outside the window: everything before t0 plus the window is everything so far.
    before = {r["group"]: r["requests"] for r in gateway.usage(group_by="key", end=iso(t0)).json()["data"]}
    everything = {r["group"]: r["requests"] for r in gateway.usage(group_by="key").json()["data"]}
    inside = expect(0)
    assert everything == {k: before.get(k, 0) + inside.get(k, {"requests": 0})["requests"] for k in everything}
    assert f"a-{tag}" not in {r["group"] for r in gateway.usage(group_by="metadata.team", end=iso(t0)).json()["data"]}
    assert gateway.usage(group_by="alias", start=iso(t1 + 3600)).json()["data"] == []
    assert gateway.usage().json()["group_by"] == "alias"

    for params, param in [({"group_by": "colour"}, "group_by"), ({"start": "yesterday"}, "start"), ({"end": "2024-13-01"}, "end")]:
        response = gateway.usage(**params)
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == param


def test_usage_api_needs_an_admin_key(gateway: Gateway) -> None:
    http = gateway.http
    missing = http.get("/v1/usage")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert http.get("/v1/usage", headers=bearer("gk-wrong")).status_code == 401
    denied = http.get("/v1/usage", headers=bearer(KEYS["app-1"]))
    assert denied.status_code == 403
    assert (denied.json()["error"]["type"], denied.json()["error"]["code"]) == ("permission_error", "admin_key_required")
    assert "admin" in denied.json()["error"]["message"]
    assert http.get("/v1/usage", headers=bearer(ADMIN)).status_code == 200


def test_usage_api_with_the_ledger_off(upstreams: Any) -> None:
    oai, _ = upstreams
    config = make_config({"oai": oai_alias(oai.base_url)}, auth={"keys": [{"id": "a", "key": "k-a"}], "admin_keys": ["k-admin"]})
    with run_in_thread(create_app(config), lifespan="on") as server, httpx.Client(base_url=server.base_url) as http:
        served = http.post("/v1/embeddings", json={"model": "oai", "input": "x"}, headers=bearer("k-a"))
        assert served.status_code == 200
        response = http.get("/v1/usage", headers=bearer("k-admin"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ledger_disabled"
        assert "usage.ledger" in response.json()["error"]["message"]
        assert http.get("/v1/usage", headers=bearer("k-a")).status_code == 403


def scrape(http: httpx.Client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for sample in family.samples
        if sample.name.startswith("gateway_ledger_")
    }


def wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_an_unwritable_ledger_never_costs_a_request(upstreams: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.usage.ledger")
    oai, _ = upstreams
    db = tmp_path / "sick.db"
    config = make_config({"oai": oai_alias(oai.base_url)}, usage={"ledger": f"sqlite:///{db}"})
    with run_in_thread(create_app(config), lifespan="on") as server, httpx.Client(base_url=server.base_url) as http:
        assert http.post("/v1/embeddings", json={"model": "oai", "input": "before"}).status_code == 200
        assert http.get("/v1/usage").status_code == 200
        assert scrape(http)["gateway_ledger_write_errors_total"] == 0
        # Replace the table with one the writer cannot insert into (and cannot recreate over).
        with sqlite3.connect(db) as conn:
            conn.executescript("DROP TABLE usage; CREATE TABLE usage (x);")
        during = [rid("sick") for _ in range(5)]
        for request_id in during:
            response = http.post("/v1/embeddings", json={"model": "oai", "input": "during"}, headers={"x-request-id": request_id})
            assert response.status_code == 200
        wait_for(lambda: scrape(http)["gateway_ledger_write_errors_total"] >= 1, "a ledger write error in /metrics")
        assert scrape(http)["gateway_ledger_pending_rows"] >= len(during)
        unreadable = http.get("/v1/usage")
        assert unreadable.status_code == 503
        assert unreadable.json()["error"]["code"] == "ledger_unavailable"
        assert any("usage ledger write failed" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        # Repaired: the writer reopens the file, recreates the table and writes the rows it held.
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE usage")
        wait_for(lambda: scrape(http)["gateway_ledger_pending_rows"] == 0, "the held rows to be written")
        assert http.get("/v1/usage").status_code == 200
        assert scrape(http)["gateway_ledger_rows_dropped_total"] == 0
    assert set(ledger_rows(db, during)) == set(during)


def test_sigterm_under_load_keeps_a_row_for_every_answered_request(upstreams: Any, tmp_path: Path) -> None:
    oai, _ = upstreams
    oai.app.reset()
    db = tmp_path / "u.db"
    config = write_config(tmp_path / "gateway.yaml", {
        "usage": {"ledger": f"sqlite:///{db}"},
        "models": {"mini": LOCAL, "slow": oai_alias(oai.base_url)},
    })
    slow = 24
    with serve(config) as (process, base):
        oai.app.faults.add("delay", None, seconds=1.0)  # every upstream call takes a second
        try:
            async def load() -> list[tuple[str, Any]]:
                async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=100)) as client:
                    async def one(alias: str, i: int) -> tuple[str, Any]:
                        request_id = rid(f"{alias}{i}")
                        try:
                            response = await client.post("/v1/embeddings", json={"model": alias, "input": [f"text {i}"] * 4},
                                                         headers={"x-request-id": request_id})
                        except httpx.TransportError as exc:
                            return request_id, exc
                        return request_id, response

                    tasks = [asyncio.create_task(one("slow", i)) for i in range(slow)]
                    tasks += [asyncio.create_task(one("mini", i)) for i in range(24)]
                    deadline = time.monotonic() + 30
                    while oai.app.log.in_flight < slow:  # every slow request is waiting on the upstream
                        assert time.monotonic() < deadline, "the slow requests never reached the upstream"
                        await asyncio.sleep(0.01)
                    process.send_signal(signal.SIGTERM)
                    tasks += [asyncio.create_task(one("mini", 100 + i)) for i in range(8)]  # late: may be refused
                    return await asyncio.gather(*tasks)

            results = asyncio.run(load())
        finally:
            oai.app.faults.reset()
        stop(process)
    answered = [request_id for request_id, r in results if isinstance(r, httpx.Response) and r.status_code == 200]
    assert len(answered) >= slow  # the requests in flight at SIGTERM were all finished
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for _, r in results[:slow])
    rows = ledger_rows(db)
    missing = [request_id for request_id in answered if request_id not in rows]
    assert not missing, f"{len(missing)} answered requests have no ledger row"
    assert all(rows[request_id]["status"] == 200 for request_id in answered)

