"""The command line: serve (with graceful shutdown), embed, python -m gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def ledger_env(tmp_path: Path) -> dict[str, str]:
    """The shipped config, with its ledger in a temporary folder instead of the checkout."""
    return {**os.environ, "GATEWAY_LEDGER": f"sqlite:///{tmp_path}/usage.db"}


@pytest.fixture()
def served(ledger_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**ledger_env, "GATEWAY_CONFIG": str(ROOT / "config.yaml")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            for _ in range(600):
                if process.poll() is not None:
                    pytest.fail(f"serve exited early: {process.stdout.read() if process.stdout else ''}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                asyncio.run(asyncio.sleep(0.05))
            else:
                pytest.fail("serve never became ready")
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_answers_and_logs_one_line_per_request(served: tuple[subprocess.Popen[str], str]) -> None:
    process, base = served
    response = httpx.post(f"{base}/v1/embeddings", json={"model": "local-minilm", "input": "hi"}, headers={"x-request-id": "cli-test-1"})
    assert response.status_code == 200
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    # uvicorn re-raises the signal after a clean shutdown, as a terminated process should.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "stopped cleanly" in output
    lines = [line for line in output.splitlines() if "request_id=cli-test-1" in line]
    assert len(lines) == 1
    assert "POST /v1/embeddings alias=local-minilm status=200" in lines[0]


def test_sigterm_finishes_in_flight_requests(served: tuple[subprocess.Popen[str], str]) -> None:
    process, base = served
    texts = [f"sentence {i} " + "padding words " * 40 for i in range(256)]

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tasks = [asyncio.create_task(client.post("/v1/embeddings", json={"model": "local-minilm", "input": texts[i::8]})) for i in range(8)]
            await asyncio.sleep(0.3)  # requests are in flight when the signal lands
            process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(load())
    assert [r.status_code for r in responses] == [200] * 8
    assert all(len(r.json()["data"]) == 32 for r in responses)
    process.wait(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)


def test_embed_command_prints_the_response(ledger_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "embed", "--config", str(ROOT / "config.yaml"), "--model", "local-minilm", "one", "two"],
        capture_output=True, text=True, cwd=ROOT, env=ledger_env,
    )
    assert result.returncode == 0, result.stderr
    import json

    body = json.loads(result.stdout)
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 384
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "embed", "--config", str(ROOT / "config.yaml"), "--model", "nope", "x"],
        capture_output=True, text=True, cwd=ROOT, env=ledger_env,
    )
    assert missing.returncode == 1
    assert "model_not_found" in missing.stdout


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m:\n    provider: onnx\n    model: nope\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models.m.model" in result.stderr


def test_the_console_script_is_installed() -> None:
    """The README's first command runs `embedding-gateway`, not `python -m gateway`."""
    script = Path(sys.executable).with_name("embedding-gateway")
    assert script.exists(), f"{script} is missing: is the package installed (pip install -e .)?"
    result = subprocess.run([str(script), "check-config", str(ROOT / "config.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_open_gateway_beyond_loopback_is_warned_about() -> None:
    from gateway.cli import exposure_warning
    from gateway.config import parse_config

    models = {"m": {"provider": "onnx", "model": "all-MiniLM-L6-v2"}}
    open_config = parse_config({"models": models}, {})
    closed = parse_config({"models": models, "auth": {"keys": [{"id": "a", "key": "k"}]}}, {})
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(open_config, host) is None
    warning = exposure_warning(open_config, "0.0.0.0")
    assert warning is not None and "NO AUTH" in warning and "0.0.0.0" in warning
    assert exposure_warning(closed, "0.0.0.0") is None
