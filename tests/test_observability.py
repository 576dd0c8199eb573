"""Metrics, logs, request ids, secrets and the usage CLI, after known sequences of requests.

The metrics and request-id tests run the app in-process (uvicorn in a thread); the log,
secret and CLI tests share one ``serve --log-format json --log-level debug`` subprocess
whose config takes every secret from environment variables.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import make_config
from fakes.openai_upstream import OpenAIUpstream
from fakes.perplexity_upstream import PerplexityUpstream
from fakes.server import RunningServer, run_in_thread
from gateway.app import create_app
from gateway.config import load_config
from serving import LOCAL, ROOT, ledger_rows, serve, stop, write_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: httpx.Client) -> tuple[Samples, set[str]]:
    """Every sample of ``/metrics`` by (name, sorted labels), and the family names."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def number(samples: Samples, name: str, **labels: str) -> float:
    found = value(samples, name, **labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer[OpenAIUpstream]]:
    with run_in_thread(OpenAIUpstream()) as server:
        yield server


@pytest.fixture(scope="module")
def local(upstream: RunningServer[OpenAIUpstream]) -> Iterator[httpx.Client]:
    """A fresh app (its own metrics registry) with a local alias and an upstream alias."""
    oai = {"provider": "openai", "base_url": f"{upstream.base_url}/v1", "model": "fake-minilm", "price_per_million_tokens": 0.02}
    with run_in_thread(create_app(make_config({"mini": LOCAL, "oai": oai})), lifespan="on", startup_timeout=60) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            yield http


def test_metrics_after_a_known_sequence(local: httpx.Client) -> None:
    mini = [local.post("/v1/embeddings", json={"model": "mini", "input": text}) for text in ("one", ["two", "three words here"])]
    oai = [local.post("/v1/embeddings", json={"model": "oai", "input": ["a b c"] * n}) for n in (1, 2, 3)]
    assert [r.status_code for r in mini + oai] == [200] * 5
    bad = local.post("/v1/embeddings", json={"model": "mini", "input": "x", "dimensions": 7})
    unknown = local.post("/v1/embeddings", json={"model": "no-such-alias", "input": "x"})
    assert (bad.status_code, unknown.status_code) == (400, 404)

    samples, families = scrape(local)
    requests = {labels: v for (name, labels), v in samples.items() if name == "gateway_requests_total"}
    assert requests == {
        (("alias", "mini"), ("deployment", "mini"), ("status", "200")): 2,
        (("alias", "oai"), ("deployment", "oai"), ("status", "200")): 3,
        (("alias", "mini"), ("deployment", "none"), ("status", "400")): 1,
        # an alias a client made up never becomes a label value of its own
        (("alias", "other"), ("deployment", "none"), ("status", "404")): 1,
    }
    for alias, responses in (("mini", mini), ("oai", oai)):
        tokens = sum(r.json()["usage"]["prompt_tokens"] for r in responses)
        assert value(samples, "gateway_tokens_total", alias=alias, deployment=alias) == tokens
    assert value(samples, "gateway_cost_usd_total", alias="oai", deployment="oai") == pytest.approx(
        sum(r.json()["usage"]["cost"]["total_cost"] for r in oai)
    )
    assert value(samples, "gateway_cost_usd_total", alias="mini", deployment="mini") is None  # no price, no cost
    for alias, count in (("mini", 3), ("oai", 3), ("other", 1)):
        assert value(samples, "gateway_request_seconds_count", alias=alias) == count
        assert value(samples, "gateway_request_seconds_bucket", alias=alias, le="+Inf") == count
        assert number(samples, "gateway_request_seconds_sum", alias=alias) > 0
    assert number(samples, "gateway_local_batch_size_count", deployment="mini") > 0
    assert number(samples, "gateway_local_batch_size_sum", deployment="mini") >= 3  # all three mini inputs ran
    assert value(samples, "gateway_local_queue_depth", deployment="mini") is not None
    # One upstream attempt per served request (the 400 and the 404 never reached a deployment).
    assert value(samples, "gateway_upstream_attempt_seconds_count", deployment="oai", outcome="ok") == 3
    assert value(samples, "gateway_upstream_attempt_seconds_count", deployment="mini", outcome="ok") == 2
    assert value(samples, "gateway_circuit_state", deployment="oai") == 0
    assert value(samples, "gateway_circuit_state", deployment="mini") == 0
    assert value(samples, "gateway_retries_total", alias="oai") in (None, 0)
    assert {"gateway_retries", "gateway_fallbacks", "gateway_circuit_state", "gateway_upstream_attempt_seconds",
            "gateway_ledger_write_errors", "gateway_ledger_rows_dropped"} <= families
    # Scraping is not a request of the API: counts do not move.
    again, _ = scrape(local)
    assert {k: v for k, v in again.items() if k[0] == "gateway_requests_total"} == {
        ("gateway_requests_total", labels): v for labels, v in requests.items()
    }


def test_request_ids_reach_the_upstream(local: httpx.Client, upstream: RunningServer[OpenAIUpstream]) -> None:
    sent = f"trace-{uuid.uuid4().hex}"
    response = local.post("/v1/embeddings", json={"model": "oai", "input": "x"}, headers={"x-request-id": sent})
    assert response.headers["x-request-id"] == sent
    assert upstream.app.log.last.header("x-request-id") == sent
    generated = local.post("/v1/embeddings", json={"model": "oai", "input": "y"})
    assert generated.headers["x-request-id"] and generated.headers["x-request-id"] != sent
    assert upstream.app.log.last.header("x-request-id") == generated.headers["x-request-id"]


# One served run with known secrets, JSON logs at debug level, and a ledger.

SECRET_VARS = ("GW_KEY_APP", "GW_KEY_NARROW", "GW_ADMIN", "UPSTREAM_KEY", "PPLX_KEY", "UPSTREAM_WRONG_KEY", "HEADER_SECRET")


class Run:
    def __init__(self) -> None:
        self.secrets = {name: f"secret-{name.lower()}-{secrets.token_hex(12)}" for name in SECRET_VARS}
        self.responses: list[httpx.Response] = []
        self.sent: dict[str, dict[str, Any]] = {}  # request id -> what its access line and ledger row must say
        self.stdout = self.stderr = ""
        self.config: Path = Path()
        self.db: Path = Path()
        self.upstream_ids: list[str | None] = []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = Run()
    tmp = tmp_path_factory.mktemp("observed")
    out.db = tmp / "u.db"
    with run_in_thread(OpenAIUpstream(api_key=out.secrets["UPSTREAM_KEY"])) as oai, \
            run_in_thread(PerplexityUpstream(api_key=out.secrets["PPLX_KEY"])) as pplx:
        out.config = write_config(tmp / "gateway.yaml", {
            "auth": {
                "keys": [
                    {"id": "app", "key": "${GW_KEY_APP}"},
                    {"id": "narrow", "key": "${GW_KEY_NARROW}", "models": ["mini"], "rpm": 1},
                ],
                "admin_keys": ["${GW_ADMIN}"],
            },
            "usage": {"ledger": f"sqlite:///{out.db}"},
            "models": {
                "mini": LOCAL,
                "oai": {"provider": "openai", "base_url": f"{oai.base_url}/v1", "api_key": "${UPSTREAM_KEY}",
                        "model": "fake-minilm", "price_per_million_tokens": 0.02,
                        "headers": {"x-extra-auth": "${HEADER_SECRET}"}},
                "pplx": {"provider": "perplexity", "base_url": pplx.base_url, "api_key": "${PPLX_KEY}",
                         "model": "pplx-embed-v1-0.6b"},
                "broken": {"provider": "openai", "base_url": f"{oai.base_url}/v1", "api_key": "${UPSTREAM_WRONG_KEY}",
                           "model": "fake-minilm"},
            },
        })
        with serve(out.config, "--log-format", "json", "--log-level", "debug", env=out.secrets) as (process, base):
            app, narrow, admin = (f"Bearer {out.secrets[n]}" for n in ("GW_KEY_APP", "GW_KEY_NARROW", "GW_ADMIN"))
            with httpx.Client(base_url=base, timeout=60) as http:
                def embed(tag: str, body: dict[str, Any], auth: str | None, status: int, alias: str, key_id: str | None) -> None:
                    request_id = f"{tag}-{uuid.uuid4().hex[:8]}"
                    headers = {"x-request-id": request_id, **({"authorization": auth} if auth else {})}
                    response = http.post("/v1/embeddings", json=body, headers=headers)
                    assert response.status_code == status, (tag, response.text)
                    out.responses.append(response)
                    out.sent[request_id] = {"status": status, "alias": alias, "key_id": key_id}

                embed("mini", {"model": "mini", "input": "hello"}, app, 200, "mini", "app")
                embed("oai", {"model": "oai", "input": ["a b", "c"], "metadata": {"team": "x"}}, app, 200, "oai", "app")
                out.upstream_ids.append(oai.app.log.last.header("x-request-id"))
                embed("pplx", {"model": "pplx", "input": ["d e f"]}, app, 200, "pplx", "app")
                embed("broken", {"model": "broken", "input": "x"}, app, 502, "broken", "app")  # upstream 401
                # An upstream that echoes the key it was sent in an error message.
                oai.app.faults.add("status", status=400, message=f"bad request with key {out.secrets['UPSTREAM_KEY']}")
                embed("echo", {"model": "oai", "input": "x"}, app, 400, "oai", "app")
                embed("nokey", {"model": "mini", "input": "x"}, None, 401, "-", None)
                embed("wrongkey", {"model": "mini", "input": "x"}, f"Bearer gk-{secrets.token_hex(8)}", 401, "-", None)
                embed("denied", {"model": "oai", "input": "x"}, narrow, 403, "oai", "narrow")
                embed("narrow", {"model": "mini", "input": "x"}, narrow, 200, "mini", "narrow")
                embed("limited", {"model": "mini", "input": "x"}, narrow, 429, "mini", "narrow")
                for path, auth in [("/v1/models", app), ("/v1/usage", admin), ("/v1/usage", app), ("/v1/usage", None),
                                   ("/metrics", None), ("/readyz", None), ("/healthz", None), ("/openapi.json", None),
                                   ("/v1/nothing", app)]:
                    out.responses.append(http.get(path, headers={"authorization": auth} if auth else {}))
            out.stdout, out.stderr = stop(process)
    yield out


def log_lines(run: Run) -> list[str]:
    return [line for line in (run.stdout + "\n" + run.stderr).splitlines() if line.strip()]


def test_json_logs_have_one_line_per_request(run: Run) -> None:
    lines = log_lines(run)
    assert lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line[:200]}")
    access = [r for r in records if r.get("logger") == "gateway.access"]
    for request_id, want in run.sent.items():
        mine = [r for r in access if r.get("request_id") == request_id]
        assert len(mine) == 1, request_id
        line = mine[0]
        assert (line["method"], line["path"]) == ("POST", "/v1/embeddings")
        assert {k: line[k] for k in want} == want, request_id
        assert isinstance(line["ms"], (int, float)) and line["ms"] >= 0
    # Operational routes are logged too (one line each), with their paths.
    assert {"/v1/models", "/v1/usage", "/metrics", "/readyz"} <= {r["path"] for r in access}
    assert any(r.get("message") == "gateway stopped cleanly" for r in records)


def test_request_ids_reach_the_upstream_from_serve(run: Run) -> None:
    oai_id = next(rid for rid in run.sent if rid.startswith("oai-"))
    assert run.upstream_ids == [oai_id]


def test_no_secret_in_any_response_log_line_config_repr_or_ledger(run: Run) -> None:
    texts = {"stdout": run.stdout, "stderr": run.stderr}
    for i, response in enumerate(run.responses):
        texts[f"response {i} {response.request.url.path}"] = response.text + "\n" + "\n".join(
            f"{k}: {v}" for k, v in response.headers.items()
        )
    config = load_config(run.config, env=run.secrets)
    texts["repr(config)"] = repr(config)
    texts["str(config)"] = str(config)
    texts["ledger"] = b"".join(p.read_bytes() for p in run.db.parent.glob(run.db.name + "*")).decode("latin-1")
    for name, secret in run.secrets.items():
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{name} found in {leaks}"
    # The echoing upstream's message still reaches the client, with the key redacted.
    echo = next(r for r in run.responses if r.headers.get("x-request-id", "").startswith("echo-"))
    assert "bad request with key" in echo.json()["error"]["message"]


def usage_table(run: Run, by: str) -> dict[str, int]:
    command = [str(Path(sys.executable).with_name("embedding-gateway")), "usage", "--since", "24h", "--by", by,
               "--config", str(run.config)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**run.secrets, "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        by, "requests", "inputs", "prompt_tokens", "total_tokens", "cost", "cached_tokens", "cost_saved",
    ]
    return {line.split()[0]: int(line.split()[1]) for line in lines[2:] if set(line) - {"-", " "}}


def test_usage_cli_prints_the_counts(run: Run) -> None:
    # Requests refused before authentication (401) are logged and counted, never ledger rows.
    billed = {rid: want for rid, want in run.sent.items() if want["status"] != 401}
    assert len(billed) < len(run.sent)
    expected: dict[str, int] = {}
    for want in billed.values():
        expected[want["alias"]] = expected.get(want["alias"], 0) + 1
    assert usage_table(run, "alias") == {**expected, "total": len(billed)}
    by_key: dict[str, int] = {}
    for want in billed.values():
        name = want["key_id"] or "(none)"
        by_key[name] = by_key.get(name, 0) + 1
    assert usage_table(run, "key") == {**by_key, "total": len(billed)}
    assert set(ledger_rows(run.db)) == set(billed)
