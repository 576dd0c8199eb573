"""A normal client beside hostile ones: does any of them stall it?

Starts ``embedding-gateway serve`` on loopback (the bundled local model, no ledger). For
each hostile pattern, the normal client (one-input requests, one at a time) is measured
alone, then again while the hostile client runs (in a process of its own, so its work
never holds the normal client's interpreter), side by side in one run:

- ``big-string``: requests whose input is one 10 MB string, back to back;
- ``idle-sockets``: 1,000 connections that send nothing, and 50 that send headers a byte
  at a time (re-opened as the server cuts them);
- ``large-batch``: requests of 1,000 inputs to the same local model, back to back;
- ``disconnects``: requests of 200 inputs abandoned once sent, and bodies cut mid-way.

Prints the normal client's p50 and p99 (ms) alone and beside each pattern, the server's
resident memory before and after the 10 MB strings and the large batches, the large-batch
client's own throughput alone and beside the normal client (what fairness costs it), and a
last line of ratios (beside / alone; the target is at most 2). Bounded: a fixed number of
normal requests per phase; the hostile client stops when they are done.

    python bench/hostile.py [--requests 40] [--patterns large-batch,disconnects]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import time
from pathlib import Path
from typing import Callable

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, free_port, percentile, wait_ready  # noqa: E402

BIG = ("lorem ipsum dolor sit amet " * 400_000)[:10_000_000]
Stop = multiprocessing.synchronize.Event
#: Where a hostile client reports (seconds, texts) of each request it completed.
Done = multiprocessing.queues.Queue  # type: ignore[type-arg]
Hostile = Callable[[str, Stop, Done], None]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def normal_client(base: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for i in range(count):
            started = time.perf_counter()
            response = client.post("/v1/embeddings", json={"model": "mini", "input": f"a normal request {i}"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return latencies


def big_string(base: str, stop: Stop, done: Done) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        while not stop.is_set():
            client.post("/v1/embeddings", json={"model": "mini", "input": BIG})


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def idle_sockets(base: str, stop: Stop, done: Done) -> None:
    idle = [_connect(base) for _ in range(1000)]
    slow = [_connect(base) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\n")
        while not stop.is_set():
            for index, sock in enumerate(slow):
                try:
                    sock.sendall(b"x")
                except OSError:  # cut by the header timeout: come back, as an attacker would
                    sock.close()
                    slow[index] = _connect(base)
            stop.wait(0.05)
    finally:
        for sock in idle + slow:
            sock.close()


LARGE_TEXTS = [f"text {i} of a large batch from another client" for i in range(1000)]


def large_batch(base: str, stop: Stop, done: Done) -> None:
    with httpx.Client(base_url=base, timeout=600) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.post("/v1/embeddings", json={"model": "mini", "input": LARGE_TEXTS})
            assert response.status_code == 200, response.text
            done.put((time.perf_counter() - started, len(LARGE_TEXTS)))


def large_alone(base: str, count: int) -> float:
    """Texts/s of the large-batch client with nobody else."""
    with httpx.Client(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        for _ in range(count):
            assert client.post("/v1/embeddings", json={"model": "mini", "input": LARGE_TEXTS}).status_code == 200
        return count * len(LARGE_TEXTS) / (time.perf_counter() - started)


def disconnects(base: str, stop: Stop, done: Done) -> None:
    texts = [f"text {i} abandoned by its client" for i in range(200)]
    body = httpx.Request("POST", f"{base}/v1/embeddings", json={"model": "mini", "input": texts}).read()
    head = b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    while not stop.is_set():
        with _connect(base) as sock:  # the whole request, then gone
            sock.sendall(head % len(body) + body)
            stop.wait(0.05)
        with _connect(base) as sock:  # half a body, then gone
            sock.sendall(head % len(body) + body[: len(body) // 2])
        stop.wait(0.02)


def _hostile_process(hostile: Hostile, base: str, stop: Stop, done: Done, started: Stop) -> None:
    started.set()
    hostile(base, stop, done)


def beside(base: str, hostile: Hostile, count: int) -> tuple[list[float], list[tuple[float, int]]]:
    """The normal client's latencies beside ``hostile``, and what the hostile one completed."""
    context = multiprocessing.get_context("spawn")
    stop, started, done = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=_hostile_process, args=(hostile, base, stop, done, started), daemon=True)
    process.start()
    started.wait(60)
    time.sleep(0.5)  # let the hostile client get going
    try:
        latencies = normal_client(base, count)
    finally:
        stop.set()
        process.join(120)
    completed = []
    while not done.empty():
        completed.append(done.get())
    return latencies, completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="normal requests per phase")
    parser.add_argument("--patterns", default="big-string,idle-sockets,large-batch,disconnects",
                        help="comma-separated hostile patterns to run")
    args = parser.parse_args()
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "header_timeout_s": 2, "body_timeout_s": 2},
        "usage": {"ledger": "off"},
        "models": {"mini": {"provider": "onnx", "model": "all-MiniLM-L6-v2", "timeout_s": 600}},
    }
    patterns: dict[str, Hostile] = {
        "big-string": big_string, "idle-sockets": idle_sockets, "large-batch": large_batch, "disconnects": disconnects,
    }
    patterns = {name: patterns[name] for name in args.patterns.split(",")}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--log-level", "error"],
            cwd=ROOT, env=os.environ.copy(),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/readyz", process)
            normal_client(base, 20)  # warm up
            ratios = []
            for name, hostile in patterns.items():
                rss_before = rss_mb(process.pid)
                alone = normal_client(base, args.requests)
                with_it, completed = beside(base, hostile, args.requests)
                p50, p99 = percentile(alone, 50), percentile(alone, 99)
                h50, h99 = percentile(with_it, 50), percentile(with_it, 99)
                print(f"{name:13s} alone p50 {p50:7.1f} ms p99 {p99:7.1f} ms | beside p50 {h50:7.1f} ms p99 {h99:7.1f} ms")
                if name in ("big-string", "large-batch"):
                    peak = rss_mb(process.pid)
                    time.sleep(2)
                    print(f"{'':13s} server RSS: {rss_before:.0f} MB before, {peak:.0f} MB after, "
                          f"{rss_mb(process.pid):.0f} MB 2 s later")
                if name == "large-batch":
                    alone_rate = large_alone(base, 3)
                    beside_rate = sum(n for _, n in completed) / sum(s for s, _ in completed) if completed else 0.0
                    print(f"{'':13s} large client: alone {alone_rate:.0f} texts/s, beside the normal client "
                          f"{beside_rate:.0f} texts/s ({len(completed)} requests)")
                ratios.append(f"{name} p50 = {h50 / p50:.2f}, {name} p99 = {h99 / p99:.2f}")
            print("; ".join(ratios))
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
