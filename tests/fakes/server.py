"""Serve an ASGI app with uvicorn on a loopback port the OS picks.

    with run_in_thread(OpenAIUpstream()) as server:      # sync tests
        httpx.post(server.base_url + "/v1/embeddings", json=...)

    async with run_async(OpenAIUpstream()) as server:    # inside a running loop
        ...

``serve_forever`` backs the ``python -m fakes.<name>`` entry points: it prints
``listening on http://HOST:PORT`` (flushed) once the server accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import uvicorn
from uvicorn.config import LOGGING_CONFIG

__all__ = ["RunningServer", "run_async", "run_in_thread", "serve_forever"]

AppT = TypeVar("AppT")


@dataclass
class RunningServer(Generic[AppT]):
    """A started server: ``app`` is the object passed in, ``base_url`` its address."""

    app: AppT
    host: str
    port: int
    server: uvicorn.Server

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections; without
    # it every response whose headers and body go out separately waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _server(app: Any, *, lifespan: str, log_config: Any = None) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=log_config,
        lifespan=lifespan,  # type: ignore[arg-type]
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


def _release(app: Any) -> None:
    release = getattr(app, "release_waiters", None)
    if callable(release):
        release()


@contextmanager
def run_in_thread(
    app: AppT,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: str = "off",
    startup_timeout: float = 10.0,
) -> Iterator[RunningServer[AppT]]:
    """Run ``app`` in a background thread until the block exits.

    Delays and hangs still pending at exit are ended (their connections closed), so
    stopping never waits for them.
    """
    sock = _bind(host, port)
    server = _server(app, lifespan=lifespan)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{sock.getsockname()[1]}",
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.002)
        yield RunningServer(app, host, sock.getsockname()[1], server)
    finally:
        _release(app)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@asynccontextmanager
async def run_async(
    app: AppT, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "off"
) -> AsyncIterator[RunningServer[AppT]]:
    """Run ``app`` as a task of the current event loop until the block exits."""
    sock = _bind(host, port)
    server = _server(app, lifespan=lifespan)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server did not start")
            await asyncio.sleep(0.002)
        yield RunningServer(app, host, sock.getsockname()[1], server)
    finally:
        _release(app)
        server.should_exit = True
        await task
        sock.close()


def serve_forever(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, announcing the address first."""

    async def main() -> None:
        sock = _bind(host, port)
        server = _server(app, lifespan="off", log_config=LOGGING_CONFIG)
        server.config.timeout_graceful_shutdown = 1
        # Real upstreams keep idle connections far longer than uvicorn's 5 s default, and a
        # benchmark leaves one target idle for longer than that while it measures the others.
        server.config.timeout_keep_alive = 75
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise SystemExit("the server did not start")
            await asyncio.sleep(0.002)
        print(f"listening on http://{host}:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(main())


def fake_main(make: Callable[..., Any], prog: str, argv: Sequence[str] | None = None) -> None:
    """The command line of a fake upstream module: ``make(api_key=..., salt=...)`` served
    in the foreground on ``--host``/``--port``."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--salt", default="")
    args = parser.parse_args(argv)
    serve_forever(make(api_key=args.api_key, salt=args.salt), host=args.host, port=args.port)
