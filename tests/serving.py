"""Helpers for the accounting, auth and observability tests: ``serve`` as a subprocess,
the usage ledger read straight from its SQLite file, ISO times for ``/v1/usage``."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
import yaml
from contextlib import contextmanager

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"provider": "onnx", "model": "all-MiniLM-L6-v2"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def serve(config: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m gateway serve --config CONFIG ARGS`` on a free port, ready; killed if still alive at exit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                if process.poll() is not None:
                    out, err = process.communicate()
                    raise AssertionError(f"serve exited early ({process.returncode}):\n{out}\n{err}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("serve never became ready")
                time.sleep(0.05)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM, then the process's stdout and stderr once it has exited cleanly."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    # uvicorn re-raises the signal after a clean shutdown, as a terminated process should.
    assert process.returncode in (0, -signal.SIGTERM), (process.returncode, err[-2000:])
    return out, err


def ledger_rows(db: Path, request_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Rows of the ledger file at ``db`` by request id (only ``request_ids`` when given)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(row) for row in conn.execute("SELECT * FROM usage ORDER BY id")]
    finally:
        conn.close()
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert row["request_id"] not in by_id, f"two rows for request {row['request_id']}"
        by_id[row["request_id"]] = row
    if request_ids is None:
        return by_id
    wanted = set(request_ids)
    return {rid: row for rid, row in by_id.items() if rid in wanted}
