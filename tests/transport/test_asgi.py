"""The ASGI server's connections end when their peer is gone, and no later.

hypercorn keeps a WebSocket's ping task asleep for the ping interval after the socket
closed; a connection whose application already returned is ended at once instead, so a
server stopping after its sessions closed does not wait for it. Time here is trio's
`MockClock` (it jumps only when every task has been blocked for a while), so the check is
of virtual seconds, not of this machine's speed.
"""

from __future__ import annotations

import functools

import trio
import trio.testing
from trio_websocket import open_websocket_url

from transport.asgi import CLOSE_SECONDS, ServerLimits, ServerStatistics, serve_asgi
from transport.websocket import open_websocket


async def _echo(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """A WebSocket application that echoes text until the peer closes."""
    assert scope["type"] == "websocket"
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


async def test_a_closed_websocket_ends_its_connection_without_waiting_for_pings(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0.05  # (real seconds every task must be blocked)
    stats = ServerStatistics()
    stop = trio.Event()
    limits = ServerLimits(ping_seconds=60.0, graceful_seconds=30.0)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(functools.partial(
            serve_asgi, _echo, host="127.0.0.1", port=0, limits=limits,  # type: ignore[arg-type]
            shutdown_trigger=stop.wait, statistics=stats))  # fmt: skip
        url = urls[0].replace("http://", "ws://")
        async with open_websocket_url(url) as websocket:
            await websocket.send_message("ping?")
            assert await websocket.get_message() == "ping?"
            assert stats.open == 1
        closed_at = trio.current_time()
        stop.set()
    # The server stopped as soon as the connection's peer was gone: not after the ping
    # interval, nor after the grace an application still running gets.
    assert stats.open == 0
    assert trio.current_time() - closed_at < CLOSE_SECONDS


async def test_a_session_closed_as_the_servers_first_ping_arrives_closes_cleanly() -> None:
    """hypercorn pings as soon as a session opens; a client closing at once met that ping
    in a state where wsproto allows no pong, and its block raised wsproto's error. (Its
    close still waits out the closing handshake's bound: the library's reader is gone.)"""

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(functools.partial(
            serve_asgi, _echo, host="127.0.0.1", port=0, limits=ServerLimits(),  # type: ignore[arg-type]
            shutdown_trigger=stop.wait))  # fmt: skip
        url = urls[0].replace("http://", "ws://")
        for _ in range(3):  # (each meets it, nearly always)
            async with open_websocket(url, max_message_bytes=1024):
                pass
        stop.set()
