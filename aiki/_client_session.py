"""The client's multiplexed WebSocket session (under trio).

One WebSocket to ``/api/v1/session`` carries every request of a `Client` used in
``async with`` under trio: requests are numbered, any number are in flight at once, and
a reader task routes each reply to its caller. It costs a fraction of an HTTP request on
both sides. The session connects on first use and again after it drops; requests in
flight when it drops fail with `aiki.UnavailableError` (like a failed HTTP request).
"""

from __future__ import annotations

import itertools
from typing import Final

import attrs
import orjson
import trio
import trio_websocket

from ._protocol import ERROR_BODY, OPERATION_OF, OPERATIONS
from .errors import UnavailableError, error_from_reply

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

Frame = dict[str, object]


@attrs.define
class _Connection:
    """One WebSocket and the requests waiting for a reply on it."""

    websocket: trio_websocket.WebSocketConnection
    pending: dict[int, trio.MemorySendChannel[Frame | UnavailableError]] = attrs.Factory(dict)


class ClientSession:
    """Requests over one WebSocket; background tasks run in ``nursery``."""

    def __init__(self, url: str, nursery: trio.Nursery) -> None:
        self._url = (url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
                     + "/api/v1/session")  # fmt: skip
        self._nursery = nursery
        self._connection: _Connection | None = None
        self._ids = itertools.count()
        self._connecting = trio.Lock()

    async def call(self, request: object) -> object:
        """Send ``request`` and return the decoded reply.

        Raises:
            aiki.AikiError: the server's error for this request.
            aiki.UnavailableError: no session, or it dropped before the reply came.
        """
        name = OPERATION_OF[type(request)]
        operation = OPERATIONS[name]
        connection = await self._connected()
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Frame | UnavailableError](1)
        connection.pending[request_id] = send
        try:
            body = operation.request.encode(request)
            frame = b'{"id":%d,"op":"%s","body":%s}' % (request_id, name.encode(), body)
            try:
                await connection.websocket.send_message(frame.decode())
            except trio_websocket.ConnectionClosed as exc:
                raise UnavailableError(f"session with {self._url} closed: {exc}") from None
            reply = await receive.receive()
        finally:
            connection.pending.pop(request_id, None)
        if isinstance(reply, UnavailableError):
            raise reply
        if "error" in reply:
            error = ERROR_BODY.structure(reply["error"])
            raise error_from_reply(error.code, error.message, errors=error.errors,
                                   run_id=error.run_id)  # fmt: skip
        return operation.reply.structure(reply["ok"])

    async def _connected(self) -> _Connection:
        async with self._connecting:
            if self._connection is None or self._connection.websocket.closed is not None:
                try:
                    websocket = await trio_websocket.connect_websocket_url(
                        self._nursery, self._url, max_message_size=MAX_MESSAGE_BYTES
                    )
                except (trio_websocket.HandshakeError, OSError) as exc:
                    raise UnavailableError(f"cannot reach the Aiki server at {self._url}: "
                                           f"{exc!r}") from exc  # fmt: skip
                self._connection = _Connection(websocket)
                self._nursery.start_soon(self._read, self._connection)
            return self._connection

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                frame = orjson.loads(await connection.websocket.get_message())
                if isinstance(frame, dict) and "id" in frame:
                    waiting = connection.pending.pop(frame["id"], None)
                    if waiting is not None:
                        waiting.send_nowait(frame)
        except (trio_websocket.ConnectionClosed, orjson.JSONDecodeError):
            pass  # a malformed frame ends the session like a drop
        finally:
            if self._connection is connection:
                self._connection = None  # the next call reconnects
            pending, connection.pending = connection.pending, {}
            for waiting in pending.values():
                waiting.send_nowait(UnavailableError(f"session with {self._url} dropped "
                                                     "before the reply arrived"))  # fmt: skip

    async def aclose(self) -> None:
        """Close the session."""
        if self._connection is not None:
            await self._connection.websocket.aclose()
