"""Real Redis and PostgreSQL for the tests that need them.

The shared servers come from ``GATEWAY_TEST_REDIS_URL`` and ``GATEWAY_TEST_POSTGRES_URL``
(``eval "$(bash .ci/services)"`` starts both and prints them); each test gets its own key
prefix or its own database. Tests that kill a server start a private one from the binaries
(``redis-server``; PostgreSQL's ``initdb``/``pg_ctl`` from ``GATEWAY_TEST_PG_BIN``).
Without them the tests are skipped, saying what to start; with
``GATEWAY_REQUIRE_SERVICES=1`` (CI) a missing server fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

import pytest

from serving import free_port

START_HINT = 'start them with: eval "$(bash .ci/services)" (needs redis-server and postgresql installed)'


def missing(what: str) -> NoReturn:
    message = f"{what} is not available; {START_HINT}"
    if os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def redis_url() -> str:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if not url:
        missing("Redis (GATEWAY_TEST_REDIS_URL)")
    return url


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@contextmanager
def private_database() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL, dropped afterwards; yields its URL."""
    import psycopg

    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not url:
        missing("PostgreSQL (GATEWAY_TEST_POSTGRES_URL)")
    name = unique("gw_")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PrivateRedis:
    """A redis-server of this test's own, which it may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own in ``directory`` (initdb + pg_ctl)."""

    def __init__(self) -> None:
        bin_dir = os.environ.get("GATEWAY_TEST_PG_BIN") or os.path.dirname(shutil.which("pg_ctl") or "")
        if not bin_dir or not Path(bin_dir, "initdb").exists():
            missing("PostgreSQL's initdb and pg_ctl (GATEWAY_TEST_PG_BIN)")
        self.bin = Path(bin_dir)
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
        self.directory = directory = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        directory.chmod(0o777)
        self._pg(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _pg(self, *command: str) -> None:
        if os.getuid() == 0:
            command = ("su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in command))
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")
