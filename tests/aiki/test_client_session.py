"""The client's WebSocket session against servers that misbehave at the socket level."""

from __future__ import annotations

import functools

import pytest
import trio

import aiki
import aiki.client._session as client_session
from aiki.protocol import GetRun
from tests._deadline import deadline


@deadline(30)
async def test_a_server_that_never_answers_the_handshake_is_unavailable_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TCP accepted, WebSocket handshake never answered (a server dying or stalled as the
    client connects): the request fails with UnavailableError after the connect timeout
    (shortened here to one second), and so does the next one (the session is not wedged
    behind the stalled attempt)."""
    monkeypatch.setattr(client_session, "CONNECT_SECONDS", 1.0)

    async def stall(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, stall, 0,
                                                          host="127.0.0.1"))  # fmt: skip
        port = listeners[0].socket.getsockname()[1]
        async with aiki.Client(f"http://127.0.0.1:{port}") as client:
            for _ in range(2):
                with trio.fail_after(15), pytest.raises(aiki.UnavailableError, match="handshake"):
                    await client.get_run(GetRun(run_id="01900000-0000-7000-8000-000000000000"))
        nursery.cancel_scope.cancel()


@deadline(30)
async def test_a_server_that_is_down_is_unavailable_at_once() -> None:
    """Connection refused: UnavailableError (retryable), not an exception group."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, _unused, 0,
                                                          host="127.0.0.1"))  # fmt: skip
        port = listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()  # the port is closed again: nobody listens
    async with aiki.Client(f"http://127.0.0.1:{port}") as client:
        with trio.fail_after(5), pytest.raises(aiki.UnavailableError, match="cannot reach"):
            await client.get_run(GetRun(run_id="01900000-0000-7000-8000-000000000000"))


async def _unused(stream: trio.SocketStream) -> None:
    await stream.aclose()
