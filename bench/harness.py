"""Shared pieces of the benchmarks: subprocess servers on loopback and latency statistics."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import yaml

__all__ = [
    "ROOT",
    "fake_openai_upstream",
    "free_port",
    "gateway_process",
    "listening_process",
    "percentile",
    "wait_ready",
]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], *, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


@contextlib.contextmanager
def gateway_process(
    config: dict[str, Any],
    *,
    extra_env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    checkout: Path | None = None,
) -> Iterator[str]:
    """``embedding-gateway serve`` on a free loopback port with ``config``; yields its base URL.

    ``checkout``: serve the gateway code of another checkout (a baseline) instead of this one."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        config = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1", "port": port}}
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--log-level", "warning", *extra_args]
        env = {**os.environ, **(extra_env or {})}
        process = subprocess.Popen(command, cwd=checkout or ROOT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", process)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def listening_process(command: Sequence[str], *, cwd: Path | None = None) -> Iterator[str]:
    """Run a server that prints ``listening on URL`` when ready; yields that URL."""
    process = subprocess.Popen(list(command), cwd=cwd or ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("listening on "):
                yield line.split("listening on ", 1)[1].strip()
                break
        else:
            raise RuntimeError(f"{command[:3]} exited before listening")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def fake_openai_upstream(dims: int, *, model: str = "fake-embed") -> contextlib.AbstractContextManager[str]:
    command = [sys.executable, "-m", "fakes.openai_upstream", "--port", "0", "--model", f"{model}={dims}"]
    return listening_process(command, cwd=ROOT / "tests")
