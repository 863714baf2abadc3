"""The listener holds against raw-socket abuse: a connection's failure ends that connection
only, and connections over the cap are refused with a clear 503 before descriptors run out."""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import time
import urllib.request

import trio

from tests._deadline import deadline
from tests._waiting import wait_until

from ._raw import address, read_all
from .conftest import Cluster

SERVER_ARGS = ["--max-connections", "40"]  # CAP, below


def _healthz(cluster: Cluster) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"{cluster.url}/healthz", timeout=10) as response:
        return response.status, response.read()


def _metric(cluster: Cluster, name: str) -> float:
    scrape = urllib.request.Request(f"{cluster.url}/metrics", headers=cluster.headers("admin"))
    with urllib.request.urlopen(scrape, timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def test_a_hundred_pipelined_upgrades_leave_the_server_serving(cluster: Cluster) -> None:
    """hypercorn #225: bytes pipelined after a WebSocket upgrade made its protocol code raise
    and took the whole listener down. Each such connection is now closed on its own; the
    same server process answers /healthz afterwards, and the log holds a few warnings
    (at most one per 10 s), not a hundred tracebacks."""
    pid = cluster.server.pid
    failed_before = _metric(cluster, "aiki_connections_failed")
    logged_before = cluster.server.log.stat().st_size
    host, port = address(cluster)
    bearer = f"Authorization: Bearer {cluster.keys['admin']}\r\n"  # (as `_metric`'s)
    for _ in range(100):
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                f"GET /api/v1/session HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{bearer}"
                "Sec-WebSocket-Version: 13\r\n\r\nX".encode()
            )
            read_all(sock)  # until the server closes this connection
    assert _healthz(cluster) == (200, b'{"status":"ok"}')
    assert cluster.server.process.poll() is None
    assert cluster.server.pid == pid
    assert _metric(cluster, "aiki_connections_failed") >= failed_before + 1
    with cluster.server.log.open(errors="replace") as log:
        log.seek(logged_before)
        lines = log.readlines()
    assert [line for line in lines if " ERROR " in line] == []  # no traceback either
    failed = [line for line in lines if "connection failed and was closed" in line]
    assert 1 <= len(failed) < 10, failed  # a warning per 10 s, not one per connection


CAP = 40
EXTRA = 5


def _admitted(cluster: Cluster) -> socket.socket:
    """A connection that made one request with a key (and is kept open)."""
    host, port = address(cluster)
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Authorization: Bearer {cluster.keys['admin']}\r\n\r\n".encode())  # fmt: skip
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return sock


def _fill(cluster: Cluster) -> tuple[list[socket.socket], list[bytes]]:
    """Open connections that present a key up to the cap and `EXTRA` more; return those
    held open and what the extra ones were answered (each, once it was)."""
    already = int(_metric(cluster, "aiki_connections_open")) - 1  # (not the metrics request)
    sockets = [_admitted(cluster) for _ in range(CAP - already)]
    host, port = address(cluster)
    extra = [socket.create_connection((host, port), timeout=10) for _ in range(EXTRA)]
    answered: dict[socket.socket, bytes] = {}
    deadline_at = time.monotonic() + 10
    while len(answered) < EXTRA and time.monotonic() < deadline_at:
        waiting = [sock for sock in extra if sock not in answered]
        readable, _, _ = select.select(waiting, [], [], deadline_at - time.monotonic())
        for sock in readable:
            answered[sock] = read_all(sock)
    held = sockets + [sock for sock in extra if sock not in answered]
    for sock in answered:
        sock.close()
    return held, list(answered.values())


@deadline(60)
async def test_connections_over_the_cap_get_503_and_the_server_recovers(cluster: Cluster) -> None:
    """Connections that presented a key, up to --max-connections, are held; the next one is
    answered 503 with Retry-After and closed; once they go, requests are served again."""
    held, refusals = await trio.to_thread.run_sync(_fill, cluster)
    try:
        assert len(refusals) == EXTRA
        for refusal in refusals:
            assert refusal.startswith(b"HTTP/1.1 503"), refusal
            assert b"retry-after: 1" in refusal.lower()
    finally:
        for sock in held:
            sock.close()

    async def serving() -> bool:
        try:
            return (await trio.to_thread.run_sync(_healthz, cluster))[0] == 200
        except OSError:  # 503 while the closes reach the server
            return False

    with trio.fail_after(10):
        await wait_until(serving, interval=0.05)
    assert await trio.to_thread.run_sync(_metric, cluster, "aiki_connections_refused") >= 1


def _keyless(cluster: Cluster, count: int) -> list[socket.socket]:
    """``count`` connections that send half a request head and nothing more."""
    host, port = address(cluster)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(f"GET /api/v1/session HTTP/1.1\r\nHost: {host}:{port}\r\nX-Wait: ".encode())
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and read_all(sock) == b""


@deadline(60)
async def test_keyless_connections_at_the_cap_make_room_for_one_with_a_key(
    cluster: Cluster,
) -> None:
    """Connections that never finish a request head, as many as the cap and more, do not
    lock a client with a key out: each new connection closes the oldest idle one without
    a key, and the client's request is answered."""
    made_room_before = await trio.to_thread.run_sync(_metric, cluster, "aiki_connections_made_room")
    keyless = await trio.to_thread.run_sync(_keyless, cluster, CAP + EXTRA)
    try:
        client = await trio.to_thread.run_sync(_admitted, cluster)  # (asserts its 200)
        client.close()

        def oldest_closed() -> bool:
            return all(_closed_by_server(sock) for sock in keyless[: EXTRA + 1])

        with trio.fail_after(10):
            await wait_until(lambda: trio.to_thread.run_sync(oldest_closed), interval=0.05)
        assert not _closed_by_server(keyless[-1])  # the newest are still held
        made_room = await trio.to_thread.run_sync(_metric, cluster, "aiki_connections_made_room")
        assert made_room >= made_room_before + EXTRA + 1
    finally:
        for sock in keyless:
            sock.close()
