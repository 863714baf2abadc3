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


def _fill(cluster: Cluster) -> tuple[list[socket.socket], list[bytes]]:
    """Open connections up to the cap and `EXTRA` more; return those held open and what
    the extra ones were answered (each, once it was)."""
    already = int(_metric(cluster, "aiki_connections_open")) - 1  # (not the metrics request)
    host, port = address(cluster)
    sockets = [socket.create_connection((host, port), timeout=10)
               for _ in range(CAP - already + EXTRA)]  # fmt: skip
    answered: dict[socket.socket, bytes] = {}
    deadline_at = time.monotonic() + 10
    while len(answered) < EXTRA and time.monotonic() < deadline_at:
        waiting = [sock for sock in sockets if sock not in answered]
        readable, _, _ = select.select(waiting, [], [], deadline_at - time.monotonic())
        for sock in readable:
            answered[sock] = read_all(sock)
    held = [sock for sock in sockets if sock not in answered]
    for sock in answered:
        sock.close()
    return held, list(answered.values())


@deadline(60)
async def test_connections_over_the_cap_get_503_and_the_server_recovers(cluster: Cluster) -> None:
    """Idle connections up to --max-connections are held; the next one is answered 503 with
    Retry-After and closed; once they go, requests are served again."""
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
