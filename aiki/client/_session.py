"""The client's multiplexed WebSocket session (under trio).

One WebSocket to ``/api/v1/session`` carries every request of a `Client` used in
``async with`` under trio: any number of requests are in flight at once, and a reader
task routes each reply to its caller. It costs a fraction of an HTTP request on both
sides. The session connects on first use and again after it drops; requests in flight
when it drops fail with `aiki.UnavailableError` (like a failed HTTP request). Given
several servers, it connects to the next one when its server drops the session or
cannot be reached.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from transport import WebSocketError
from transport.websocket import open_websocket

from ..protocol import MAX_MESSAGE_BYTES, OPERATIONS, session_url
from ._connection import SessionConnection, connect_error

if TYPE_CHECKING:
    import contextlib
    import ssl
    from collections.abc import Mapping
    from types import TracebackType

    from ..protocol import Request, Subscribe, Subscribed
    from ._connection import PushQueue
    from ._servers import Servers

P = TypeVar("P")

CONNECT_SECONDS: Final = 5.0
"""How long opening the session (TCP and WebSocket handshake) may take."""
CLOSE_SECONDS: Final = 2.0
"""How long the closing handshake may take before the connection is dropped."""


class ClientSession:
    """Requests over one WebSocket; the connection's reader runs in ``nursery``."""

    def __init__(
        self,
        servers: Servers,
        nursery: trio.Nursery,
        counter: collections.Counter[str] | None = None,
        auth: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.servers = servers
        self._auth: Mapping[str, str] = auth or {}
        """The headers that present the caller (`auth_headers`)."""
        self._tls = tls
        self.requests = collections.Counter[str]() if counter is None else counter
        """Requests sent, by operation name."""
        self._nursery = nursery
        self._connection: SessionConnection | None = None
        self._connecting = trio.Lock()

    async def call(self, request: Request[P]) -> P:
        """Send ``request`` and return its reply.

        Raises:
            aiki.AikiError: the server's error for this request.
            aiki.UnavailableError: no session, or it dropped before the reply came.
        """
        connection = await self.connection()
        self.requests[OPERATIONS.of(request).name] += 1
        return await connection.call(request)

    async def subscribe(
        self, request: Subscribe
    ) -> tuple[Subscribed, PushQueue, SessionConnection]:
        """Subscribe; return the reply, the queue its pushes arrive in, and the connection
        it lives on (for `unsubscribe`).

        Raises:
            aiki.AikiError: the server refused the subscription.
            aiki.UnavailableError: no session.
        """
        connection = await self.connection()
        self.requests["subscribe"] += 1
        subscribed, queue = await connection.subscribe(request)
        return subscribed, queue, connection

    async def unsubscribe(self, subscription: str, connection: SessionConnection) -> None:
        """End a subscription without waiting for the reply (if the session dropped, the
        subscription ended with it)."""
        if connection is self._connection:
            self.requests["unsubscribe"] += 1
            await connection.unsubscribe(subscription)

    async def connection(self) -> SessionConnection:
        """The open connection, opening one if there is none.

        Raises:
            aiki.UnavailableError: the server could not be reached within
                `CONNECT_SECONDS` (also a server that accepts the TCP connection but never
                answers the handshake: connecting is bounded, so it cannot hold every
                request behind it).
        """
        async with self._connecting:
            if self._connection is None or self._connection.ended is not None:
                self._connection = await self.servers.first_reachable(self._open)
            return self._connection

    async def _open(self, url: str) -> SessionConnection:
        try:
            connection: SessionConnection = await self._nursery.start(self._serve_connection, url)
        except WebSocketError as exc:
            raise connect_error(url, exc) from exc
        return connection

    async def _serve_connection(
        self, url: str, task_status: trio.TaskStatus[SessionConnection]
    ) -> None:
        """Open the WebSocket, report the connection, and read from it until it ends (a
        connection that dropped moves the session on to the next server)."""
        async with open_websocket(
            session_url(url),
            max_message_bytes=MAX_MESSAGE_BYTES,
            headers=dict(self._auth),
            ssl_context=self._tls,
            connect_seconds=CONNECT_SECONDS,
            close_seconds=CLOSE_SECONDS,
        ) as websocket:
            connection = SessionConnection(websocket, url)
            task_status.started(connection)
            await connection.read()
            self.servers.failed(url)

    async def aclose(self) -> None:
        """Close the session (bounded: a peer that never answers the closing handshake
        has its connection dropped after `CLOSE_SECONDS`)."""
        if self._connection is not None:
            with trio.move_on_after(CLOSE_SECONDS):
                await self._connection.aclose()


async def exit_without_group(
    stack: contextlib.AsyncExitStack,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """Exit the session's nursery; what the ``async with`` block raised comes out as it was
    raised, not wrapped in the nursery's exception group (so ``except aiki.ValidationError``
    matches under trio as under asyncio)."""
    try:
        await stack.__aexit__(exc_type, exc, traceback)
    except BaseExceptionGroup as group:
        if exc is None or group.exceptions != (exc,):
            raise
        # Raise the block's own exception, with the cause and context it had.
        context, cause, suppress = exc.__context__, exc.__cause__, exc.__suppress_context__
        try:
            raise exc
        finally:
            exc.__context__, exc.__cause__ = context, cause
            exc.__suppress_context__ = suppress
