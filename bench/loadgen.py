"""A lean HTTP/1.1 load generator: keep-alive connections each sending one fixed request.

It parses only what it must (status line, Content-Length, chunked bodies), so the load
it adds to a shared machine is small and the same for every target it drives.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

__all__ = ["LoadResult", "drive", "post_each"]


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, result: LoadResult
) -> None:
    sent = time.perf_counter()
    writer.write(raw)
    status = await _read_response(reader)
    result.latencies.append(time.perf_counter() - sent)
    result.statuses[status] = result.statuses.get(status, 0) + 1
    result.requests += 1
    if status != 200:
        result.errors += 1


async def drive(
    url: str, body: bytes, *, concurrency: int, seconds: float, headers: dict[str, str] | None = None,
    warmup: int = 20,
) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` connections for ``seconds``."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port_text = hostport.partition(":")
    port = int(port_text or 80)
    raw = _request_bytes(host, port, "/" + path, body, headers or {})
    result = LoadResult()
    stop_at = 0.0

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(max(1, warmup // concurrency)):
                writer.write(raw)
                await _read_response(reader)
            await ready.wait()
            while time.perf_counter() < stop_at:
                await _exchange(reader, writer, raw, result)
        finally:
            writer.close()

    ready = asyncio.Event()
    tasks = [asyncio.create_task(connection()) for _ in range(concurrency)]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    stop_at = started + seconds
    ready.set()
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result


async def post_each(url: str, bodies: list[bytes], *, concurrency: int) -> LoadResult:
    """POST every body once, from ``concurrency`` keep-alive connections sharing the queue."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port_text = hostport.partition(":")
    port = int(port_text or 80)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(_request_bytes(host, port, "/" + path, body, {}))
    result = LoadResult()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not queue.empty():
                await _exchange(reader, writer, queue.get_nowait(), result)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[connection() for _ in range(concurrency)])
    result.seconds = time.perf_counter() - started
    return result
