"""deploy/nginx.conf, as shipped, in front of two gateway processes on loopback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serving import LOCAL, ROOT, free_port, serve, write_config
from services import missing
from test_scale_processes import metric, wait_for


def render(listen: int, replicas: list[int]) -> str:
    """The shipped site config with these ports."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in replicas)
    text = re.sub(r"(    server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, text, count=1)
    return text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")


@pytest.fixture
def nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        missing("nginx (apt-get install nginx)")
    return binary


@contextmanager
def run_nginx(binary: str, directory: Path, site: str) -> Iterator[subprocess.Popen[bytes]]:
    (directory / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log {directory}/access.log;\n  client_body_temp_path {directory}/body;\n"
        f"  proxy_temp_path {directory}/proxy;\n  include {directory}/site.conf;\n}}\n"
    )
    process = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_nginx_spreads_requests_passes_large_bodies_and_skips_a_dead_replica(tmp_path: Path, nginx_binary: str) -> None:
    path = write_config(tmp_path / "g.yaml", {"models": {"mini": LOCAL}, "usage": {"ledger": "off"}})
    listen = free_port()
    with serve(path) as (first, a), serve(path) as (_, b):
        ports = [int(a.rsplit(":", 1)[1]), int(b.rsplit(":", 1)[1])]
        with run_nginx(nginx_binary, tmp_path, render(listen, ports)):
            front = f"http://127.0.0.1:{listen}"
            wait_for(lambda: _answers(front), "nginx listening")
            with httpx.Client(base_url=front, timeout=60) as client:
                for i in range(20):
                    assert client.post("/v1/embeddings", json={"model": "mini", "input": f"t{i}"}).status_code == 200
                # Both replicas served (round robin), each counting its own.
                assert metric(a, "gateway_requests_total") > 0 and metric(b, "gateway_requests_total") > 0
                # 2 MB passes nginx (its default would refuse past 1 MB): the gateway judges it.
                big = client.post("/v1/embeddings", json={"model": "mini", "input": "x", "padding": "a" * 2_000_000})
                assert big.status_code == 400 and "padding" in big.json()["error"]["message"]
                # Past the gateway's 16 MiB: the gateway's own JSON 413, not nginx's HTML page.
                huge = client.post("/v1/embeddings", content=b'{"model": "mini", "input": "' + b"a" * 17_000_000 + b'"}',
                                   headers={"content-type": "application/json"})
                assert huge.status_code == 413 and huge.json()["error"]["type"]
                first.kill()
                first.wait()
                for i in range(6):
                    assert client.post("/v1/embeddings", json={"model": "mini", "input": f"d{i}"}).status_code == 200


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
