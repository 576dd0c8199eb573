"""Reading a JSON request body within the size limit, without buffering past it, and
parsing it without holding the event loop for long."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson

from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.http.call import ApiCall
from gateway.http.connections import CUT_KEY
from gateway.http.jsonworker import watch_parent

__all__ = ["POOL_MIN_BYTES", "JsonParser", "read_json"]

_JSON_TYPES = ("application/json", "text/json")

#: Bodies of at least this many bytes are parsed in the worker process; below it parsing
#: takes under about 2 ms on the loop, less than the trip to the worker would cost.
POOL_MIN_BYTES = 1 << 20


class JsonParser:
    """Parses request bodies: small ones on the event loop, as before; large ones in one
    worker process of its own (started on the first large body, stopped by :meth:`aclose`).

    orjson holds the GIL for the whole parse, so a thread does not help: a 10 MB body held
    the loop for about 15-20 ms, and every request arriving meanwhile waited for it
    (``bench/hostile.py`` big-string p99 ratio 3.2). In the worker the loop only waits for
    the pool's threads to pickle the body out and unpickle the answer in; measured beside a
    1 ms ticker, the longest stall per 10 MB body fell from 11-13 ms to about 2-9 ms, and the
    bench's big-string p99 ratio from 3.2 to 1.84-2.06 (four runs; p50 1.1). What is left is
    the pool's threads pickling the body out and unpickling the answer (GIL held). One
    worker: at most one large body is parsed at once, the others queue for it.

    Bodies are still joined from their chunks into one ``bytes`` (0.4-3 ms for 10 MB): a
    ``bytearray`` filled as chunks arrive must be copied again to be pickled to the worker,
    which measured worse (longest stall 7-16 ms)."""

    def __init__(self, *, pool_min_bytes: int = POOL_MIN_BYTES) -> None:
        self.pool_min_bytes = pool_min_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the worker process has been started (and not stopped)."""
        return self._pool is not None

    async def parse(self, raw: bytes) -> Any:
        """The parsed body; raises :class:`orjson.JSONDecodeError` as ``orjson.loads`` does."""
        if len(raw) < self.pool_min_bytes or self._closed:
            return orjson.loads(raw)
        pool = self._pool
        if pool is None:
            # spawn: a fork would copy the gateway (models, threads) into a process that
            # only needs orjson; the worker imports nothing else (it runs orjson.loads itself)
            pool = self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, orjson.loads, raw)
        except BrokenProcessPool:  # the worker died (killed, out of memory): a new one next time
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return orjson.loads(raw)

    async def aclose(self) -> None:
        """Stops the worker process, if it was started; later bodies are parsed on the loop."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this gateway's limit of {limit} bytes")


async def read_json(call: ApiCall, *, limit: int, parser: JsonParser | None = None) -> Any:
    content_type = (call.header(b"content-type") or "application/json").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type!r}"
        )
    declared = call.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    receive = call.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if call.scope.get(CUT_KEY) == "body_timeout":
                raise RequestTimeout("the request body did not arrive within the server's body timeout")
            raise ClientClosedRequest("the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    call.body_read()
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        if parser is None or size < parser.pool_min_bytes:
            return orjson.loads(raw)
        return await parser.parse(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
