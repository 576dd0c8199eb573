"""The floor any proxy built like ours pays: a minimal ASGI app on uvicorn that forwards the
request bytes upstream exactly as the gateway's providers do (an ``httpx.Request`` handed to
the pooled httpx transport over aiohttp's pool) and returns the upstream's bytes as they are.

    python bench/passthrough.py --upstream http://127.0.0.1:PORT --port 0 [--path /v2/embed]

``--path`` is the upstream's route (default ``/v1/embeddings``), so the floor can be taken
in front of any provider's API (``/v2/embed`` for Cohere).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport


def make_app(upstream: str, *, via_client: bool = False, path: str = "/v1/embeddings") -> Any:
    """``via_client``: send through an ``httpx.AsyncClient`` (over the same aiohttp pool)
    instead of handing requests to the transport as the gateway's providers do."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
    client = httpx.AsyncClient(transport=transport, timeout=30)
    url = httpx.URL(upstream + path)
    headers = httpx.Headers({"content-type": "application/json"})
    timeouts = {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if via_client:
            response = await client.post(url, headers=headers, content=body)
        else:
            request = httpx.Request("POST", url, headers=httpx.Headers(headers), stream=httpx.ByteStream(body),
                                    extensions={"timeout": timeouts})
            request.read()
            response = await transport.handle_async_request(request)
            await response.aread()
        await send({
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(response.content)).encode())],
        })
        await send({"type": "http.response.body", "body": response.content})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--via-client", action="store_true", help="send through an httpx.AsyncClient")
    parser.add_argument("--path", default="/v1/embeddings", help="the upstream's route")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    server = uvicorn.Server(uvicorn.Config(make_app(args.upstream, via_client=args.via_client, path=args.path), log_level="warning", lifespan="off"))

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
