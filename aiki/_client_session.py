"""The client's multiplexed WebSocket session (under trio).

One WebSocket to ``/api/v1/session`` carries every request of a `Client` used in
``async with`` under trio: requests are numbered, any number are in flight at once, and
a reader task routes each reply to its caller. It costs a fraction of an HTTP request on
both sides. The session connects on first use and again after it drops; requests in
flight when it drops fail with `aiki.UnavailableError` (like a failed HTTP request).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import typing
from typing import Final

import attrs
import orjson
import trio
import trio_websocket

from ._operation_table import OPERATION_OF, OPERATIONS
from ._protocol import ERROR_BODY
from ._protocol_live import Subscribe, Subscribed, Unsubscribe
from .errors import UnavailableError, error_from_reply

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS: Final = 5.0
"""How long opening the session (TCP and WebSocket handshake) may take."""
CLOSE_TIMEOUT_SECONDS: Final = 2.0
"""How long the closing handshake may take before the connection is dropped."""

Frame = dict[str, object]


PUSH_QUEUE_LIMIT: Final = 4096
"""Push frames a subscription may have waiting; beyond that they are dropped for a resync."""


@attrs.define(eq=False)
class PushQueue:
    """The push frames of one subscription, as the reader task received them."""

    frames: collections.deque[Frame] = attrs.Factory(collections.deque)
    overflowed: bool = False
    closed: UnavailableError | None = None
    _ready: trio.Event = attrs.Factory(trio.Event)

    def put(self, frame: Frame) -> None:
        if len(self.frames) >= PUSH_QUEUE_LIMIT:
            self.frames.clear()
            self.overflowed = True
        else:
            self.frames.append(frame)
        self._ready.set()

    def close(self, reason: UnavailableError) -> None:
        self.closed = reason
        self._ready.set()

    async def get(self) -> Frame:
        """The next frame (``{"resync": true}`` after an overflow).

        Raises:
            aiki.UnavailableError: the session dropped.
        """
        while True:
            if self.overflowed:
                self.overflowed = False
                return {"resync": True}
            if self.frames:
                return self.frames.popleft()
            if self.closed is not None:
                raise self.closed
            await self._ready.wait()
            self._ready = trio.Event()


@attrs.define
class _Connection:
    """One WebSocket, the requests waiting for a reply on it, and its subscriptions."""

    websocket: trio_websocket.WebSocketConnection
    pending: dict[int, trio.MemorySendChannel[Frame | UnavailableError]] = attrs.Factory(dict)
    pushes: dict[str, PushQueue] = attrs.Factory(dict)


class ClientSession:
    """Requests over one WebSocket; background tasks run in ``nursery``."""

    def __init__(
        self, url: str, nursery: trio.Nursery, counter: collections.Counter[str] | None = None
    ) -> None:
        self.requests = collections.Counter[str]() if counter is None else counter
        """Requests sent, by operation name."""
        self._url = (url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
                     + "/api/v1/session")  # fmt: skip
        self._nursery = nursery
        self._connection: _Connection | None = None
        self._ids = itertools.count()
        self._connecting = trio.Lock()

    async def call(self, request: object, connection: _Connection | None = None) -> object:
        """Send ``request`` and return the decoded reply.

        Raises:
            aiki.AikiError: the server's error for this request.
            aiki.UnavailableError: no session, or it dropped before the reply came.
        """
        name = OPERATION_OF[type(request)]
        operation = OPERATIONS[name]
        connection = connection or await self._connected()
        self.requests[name] += 1
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

    async def subscribe(self, request: Subscribe) -> tuple[Subscribed, PushQueue, object]:
        """Subscribe on the session; return the reply, the queue its pushes arrive in,
        and a token for `unsubscribe` (the connection it lives on).

        Raises:
            aiki.AikiError: the server refused the subscription.
            aiki.UnavailableError: no session.
        """
        connection = await self._connected()
        reply = typing.cast("Subscribed", await self.call(request, connection))
        # Pushes may have arrived before this task ran again: the reader kept them.
        queue = connection.pushes.setdefault(reply.subscription, PushQueue())
        if connection.websocket.closed is not None:
            queue.close(UnavailableError(f"session with {self._url} dropped"))
        return reply, queue, connection

    async def unsubscribe(self, subscription: str, token: object) -> None:
        """End a subscription without waiting for the server's reply (best effort: if
        the session dropped, the subscription ended with it)."""
        connection = typing.cast("_Connection", token)
        connection.pushes.pop(subscription, None)
        if connection.websocket.closed is None and self._connection is connection:
            body = OPERATIONS["unsubscribe"].request.encode(Unsubscribe(subscription=subscription))
            frame = b'{"id":null,"op":"unsubscribe","body":%s}' % body
            self.requests["unsubscribe"] += 1
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await connection.websocket.send_message(frame.decode())

    async def _connected(self) -> _Connection:
        async with self._connecting:
            if self._connection is None or self._connection.websocket.closed is not None:
                try:
                    # Bounded: a server that accepts the connection but dies (or stalls)
                    # before answering the handshake would otherwise hold this lock, and
                    # every request behind it, forever. A timed-out attempt's tasks are
                    # cancelled with it (they live in the attempt's own nursery).
                    with trio.fail_after(CONNECT_TIMEOUT_SECONDS):
                        self._connection = await self._nursery.start(self._serve_connection)
                except trio.TooSlowError as exc:
                    raise UnavailableError(f"no WebSocket handshake from {self._url} within "
                                           f"{CONNECT_TIMEOUT_SECONDS:g} s") from exc  # fmt: skip
            assert self._connection is not None
            return self._connection

    async def _serve_connection(self, task_status: trio.TaskStatus[_Connection]) -> None:
        """Open one WebSocket, report it, and read from it until it closes; the WebSocket
        library's own tasks run in a nursery that ends with the connection."""
        refused: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    websocket = await trio_websocket.connect_websocket_url(
                        nursery, self._url, max_message_size=MAX_MESSAGE_BYTES
                    )
                except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                        OSError) as exc:  # fmt: skip
                    refused = exc  # raised below, outside the nursery (not in a group)
                    nursery.cancel_scope.cancel()
                else:
                    connection = _Connection(websocket)
                    task_status.started(connection)
                    await self._read(connection)
                    # The library's reader task ends once the connection is closed (it
                    # completes the closing handshake an `aclose` waits for: do not
                    # cancel it). Close it here if it is still open (a malformed frame).
                    if websocket.closed is None:
                        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                            await websocket.aclose()
        except* (trio_websocket.ConnectionClosed, OSError):
            pass  # a broken connection ends like a dropped one: the next request reconnects
        if refused is not None:
            raise UnavailableError(f"cannot reach the Aiki server at {self._url}: "
                                   f"{refused!r}") from refused  # fmt: skip

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                frame = orjson.loads(await connection.websocket.get_message())
                if not isinstance(frame, dict):
                    continue
                if "id" in frame:
                    waiting = connection.pending.pop(frame["id"], None)
                    if waiting is not None:
                        waiting.send_nowait(frame)
                elif isinstance(subscription := frame.get("subscription"), str):
                    connection.pushes.setdefault(subscription, PushQueue()).put(frame)
        except (trio_websocket.ConnectionClosed, orjson.JSONDecodeError):
            pass  # a malformed frame ends the session like a drop
        finally:
            if self._connection is connection:
                self._connection = None  # the next call reconnects
            pending, connection.pending = connection.pending, {}
            for waiting in pending.values():
                waiting.send_nowait(UnavailableError(f"session with {self._url} dropped "
                                                     "before the reply arrived"))  # fmt: skip
            for queue in connection.pushes.values():
                queue.close(UnavailableError(f"session with {self._url} dropped"))

    async def aclose(self) -> None:
        """Close the session (bounded: a peer that never answers the closing handshake
        has its connection dropped after `CLOSE_TIMEOUT_SECONDS`)."""
        if self._connection is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                await self._connection.websocket.aclose()
