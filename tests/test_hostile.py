"""Hostile traffic against ``serve`` on loopback: no client stalls the others, and nothing a
client sends is a 500. Outcomes and ordering are asserted, never times."""

from __future__ import annotations

import re
import resource
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from serving import LOCAL, ledger_rows, serve, stop, write_config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Any]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    folder = tmp_path_factory.mktemp("hostile")
    db = folder / "usage.db"
    config = write_config(folder / "gateway.yaml", {
        "server": {"header_timeout_s": 1.5, "body_timeout_s": 1.5, "max_connections": 2048},
        "usage": {"ledger": f"sqlite:///{db}"},
        "models": {"mini": {**LOCAL, "timeout_s": 600}},
    })
    with serve(config) as (process, base):
        yield base, db, process  # the last test stops it, to read its log


def rid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def raw_socket(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def wait_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (blocks until then)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_10_mb_string_is_served_and_small_requests_keep_succeeding(gateway: tuple[str, Path, Any]) -> None:
    base, _, _ = gateway
    big = ("lorem ipsum dolor sit amet " * 400_000)[:10_000_000]
    results: dict[str, httpx.Response] = {}

    def large() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            results["large"] = client.post("/v1/embeddings", json={"model": "mini", "input": big})

    thread = threading.Thread(target=large)
    thread.start()
    with httpx.Client(base_url=base, timeout=60) as client:
        small = [client.post("/v1/embeddings", json={"model": "mini", "input": f"hello {i}"}) for i in range(20)]
        assert client.get("/healthz").status_code == 200
    thread.join(120)
    assert all(r.status_code == 200 for r in small)
    assert results["large"].status_code == 200, results["large"].text[:300]
    assert results["large"].json()["usage"]["prompt_tokens"] == 256  # what was embedded, not 10 MB worth


def test_1000_idle_sockets_do_not_stop_other_clients_and_are_cut(gateway: tuple[str, Path, Any]) -> None:
    base, _, _ = gateway
    before = metric(base, "gateway_connections_cut_total", reason="header_timeout")
    idle = [raw_socket(base) for _ in range(1000)]
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(10):
                assert client.post("/v1/embeddings", json={"model": "mini", "input": f"hi {i}"}).status_code == 200
        # A fresh connection while they are all held.
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        for sock in idle:  # the header timeout closes every one of them (recv returns at close)
            assert wait_closed(sock) == b""
    finally:
        for sock in idle:
            sock.close()
    assert metric(base, "gateway_connections_cut_total", reason="header_timeout") >= before + 1000


def test_headers_sent_a_byte_at_a_time_are_cut(gateway: tuple[str, Path, Any]) -> None:
    base, _, _ = gateway
    sock = raw_socket(base)
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 100_000
    sent = 0
    try:
        for byte in request:  # never finishes its headers; the server closes the socket
            sock.sendall(bytes([byte]))
            sent += 1
            sock.settimeout(0.05)
            try:
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
        else:
            pytest.fail("the server never closed the slow connection")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert sent < len(request)


def test_a_body_shorter_than_its_content_length_gets_408(gateway: tuple[str, Path, Any]) -> None:
    base, db, _ = gateway
    request_id = rid("short")
    sock = raw_socket(base)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-request-id: " + request_id.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"model\": "
    )
    answer = wait_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408")
    row = _row(db, request_id)
    assert row["status"] == 408


def _row(db: Path, request_id: str) -> dict[str, Any]:
    for _ in range(400):
        rows = ledger_rows(db, [request_id])
        if request_id in rows:
            return rows[request_id]
        threading.Event().wait(0.025)
    raise AssertionError(f"no ledger row for {request_id}")


def test_a_disconnect_mid_body_is_499_not_500(gateway: tuple[str, Path, Any]) -> None:
    base, db, _ = gateway
    request_id = rid("gone")
    sock = raw_socket(base)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-request-id: " + request_id.encode() + b"\r\ncontent-length: 1000\r\n\r\n{\"model\": \"mini\", "
    )
    sock.close()
    row = _row(db, request_id)
    assert row["status"] == 499 and row["prompt_tokens"] == 0
    assert metric(base, "gateway_requests_total", alias="other", deployment="none", status="499") >= 1


def test_a_client_that_hangs_up_is_cancelled_and_recorded_499(gateway: tuple[str, Path, Any]) -> None:
    base, db, _ = gateway
    request_id = rid("hangup")
    texts = [f"text number {i} " + "words " * 60 for i in range(1000)]
    body = httpx.Request("POST", f"{base}/v1/embeddings", json={"model": "mini", "input": texts},
                         headers={"x-request-id": request_id}).read()
    sock = raw_socket(base)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-request-id: "
        + request_id.encode() + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    for _ in range(2000):  # queued at the local model: now hang up
        if metric(base, "gateway_local_queue_depth", deployment="mini") > 0:
            break
        threading.Event().wait(0.005)
    sock.close()
    row = _row(db, request_id)
    assert row["status"] == 499 and row["prompt_tokens"] == 0  # not billed as served
    # The rest of its work was dropped from the queue.
    for _ in range(2000):
        if metric(base, "gateway_local_queue_depth", deployment="mini") == 0:
            break
        threading.Event().wait(0.005)
    assert metric(base, "gateway_local_queue_depth", deployment="mini") == 0


def test_a_one_input_request_finishes_before_a_1000_input_one(gateway: tuple[str, Path, Any]) -> None:
    base, _, _ = gateway
    texts = [f"a longer text, number {i}, " + "padding " * 8 for i in range(1000)]
    finished: list[str] = []

    def large() -> None:
        with httpx.Client(base_url=base, timeout=300) as client:
            response = client.post("/v1/embeddings", json={"model": "mini", "input": texts})
            assert response.status_code == 200
            finished.append("large")

    thread = threading.Thread(target=large)
    thread.start()
    for _ in range(4000):
        if metric(base, "gateway_local_queue_depth", deployment="mini") > 0:
            break
        threading.Event().wait(0.005)
    response = httpx.post(f"{base}/v1/embeddings", json={"model": "mini", "input": "one"}, timeout=300)
    assert response.status_code == 200
    finished.append("small")
    thread.join(300)
    assert finished == ["small", "large"]


def test_refusals_before_auth_model_names_and_log_lines(gateway: tuple[str, Path, Any]) -> None:
    base, db, _ = gateway
    with httpx.Client(base_url=base, timeout=30) as client:
        not_allowed = client.get("/v1/embeddings")
        assert not_allowed.status_code == 405 and "POST" in not_allowed.headers["allow"]
        nowhere_id = rid("nowhere")
        assert client.get("/v1/nothing%0AGET%20/forged", headers={"x-request-id": nowhere_id}).status_code == 404
        long_id = rid("long")
        long = client.post("/v1/embeddings", json={"model": "m" * 300, "input": "x"}, headers={"x-request-id": long_id})
        assert long.status_code == 400 and long.json()["error"]["param"] == "model"
        forged_id = rid("forged")
        forged = client.post("/v1/embeddings", json={"model": "a\nGET /forged status=200", "input": "x"},
                             headers={"x-request-id": forged_id})
        assert forged.status_code == 404
    assert metric(base, "gateway_refused_requests_total", status="405") >= 1
    assert metric(base, "gateway_refused_requests_total", status="404") >= 1
    row = _row(db, long_id)
    assert row["alias"] == "-"  # the 300-character name is not written anywhere
    assert nowhere_id not in ledger_rows(db, [nowhere_id])


def test_the_log_has_no_forged_lines(gateway: tuple[str, Path, Any]) -> None:
    """Runs last in the module: reads what the server logged once stopped."""
    base, _, process = gateway
    _, err = stop(process)
    lines = err.splitlines()
    assert not any(line.startswith("GET /forged") for line in lines)
    assert any("\\nGET /forged" in line for line in lines)
    assert not any(" 500 " in line or "status=500" in line for line in lines)
    assert "m" * 300 not in err


def _healthz_on(sock: socket.socket) -> bytes:
    """One keep-alive ``GET /healthz`` on ``sock``: the answer's head and body as received."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_connections_past_max_connections_are_refused_at_once(tmp_path: Path) -> None:
    """Connections past ``server.max_connections`` get a 503 written on accept, before the
    server reads a byte of theirs; fresh connections within the limit still answer /healthz,
    and once one held connection closes a new one is served again."""
    limit = 6
    config = write_config(tmp_path / "gateway.yaml", {
        "server": {"max_connections": limit, "header_timeout_s": 120, "keepalive_timeout_s": 120},
        "usage": {"ledger": "off"},
        "models": {"mini": LOCAL},
    })
    with serve(config) as (_, base):
        held: list[socket.socket] = []
        refused = b""
        try:
            for _ in range(limit + 5):  # a few spare for the readiness probe's connection closing late
                sock = raw_socket(base)
                answer = _healthz_on(sock)
                if answer.startswith(b"HTTP/1.1 200"):
                    held.append(sock)  # kept open: it counts against the limit
                    continue
                refused = answer
                try:  # then closed: at once (EOF), or reset since our request was never read
                    assert sock.recv(65536) == b""
                except ConnectionResetError:
                    pass
                sock.close()
                break
            # Every connection within the limit answered /healthz while the others were held.
            assert 0 < len(held) <= limit
            assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
            assert b"retry-after: 1" in refused.lower() and b'"code":"overloaded"' in refused
            # Refused on accept: the answer never depended on the request (a bare connection
            # that sends nothing gets the same 503 and is closed).
            silent = raw_socket(base)
            assert wait_closed(silent).startswith(b"HTTP/1.1 503")
            silent.close()
            held.pop().close()
            for _ in range(2000):  # until the server has seen the close: then a new one is served
                sock = raw_socket(base)
                answer = _healthz_on(sock)
                sock.close()
                if answer.startswith(b"HTTP/1.1 200"):
                    break
                threading.Event().wait(0.005)
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()
        assert metric(base, "gateway_connections_cut_total", reason="max_connections") >= 2
