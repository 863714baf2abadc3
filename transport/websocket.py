"""WebSocket client connections, the same under trio and asyncio.

`open_websocket` picks the library for the running event loop: trio-websocket under trio,
``websockets`` under asyncio. Both carry text messages and are bounded in what they
accept (``max_message_bytes``) and in how long opening and closing may take; each
library's errors become a `WebSocketError` here, so nothing above this module handles
either library's exceptions.

Example::

    async with open_websocket("ws://127.0.0.1:8470/api/v1/session") as websocket:
        await websocket.send('{"id": 1, "op": "get_run", "body": {"run_id": "..."}}')
        reply = await websocket.receive()
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import attrs
import sniffio
import trio
import trio_websocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.protocol import State

from ._errors import WebSocketError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

CONNECT_SECONDS: Final = 5.0
"""How long opening a connection (TCP and the WebSocket handshake) may take."""
CLOSE_SECONDS: Final = 2.0
"""How long the closing handshake may take before the connection is dropped."""
MAX_REFUSAL_BYTES: Final = 4096
"""How much of a refused handshake's answer is kept (for the error it explains)."""


class WebSocketClient(Protocol):
    """One open WebSocket connection carrying text messages."""

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            WebSocketError: the connection is closed.
        """
        ...

    async def receive(self) -> str:
        """The next message.

        Raises:
            WebSocketError: the connection closed (normally or not) or broke.
        """
        ...

    @property
    def closed(self) -> bool:
        """Whether the connection has closed (or begun closing)."""
        ...

    async def aclose(self) -> None:
        """Close the connection (also one that is broken already: nothing is raised).

        Cancellation: put a deadline around it; a peer that never answers the closing
        handshake otherwise holds it until the connection's own close time passes.
        """
        ...


@attrs.define
class _TrioWebSocket:
    """A trio-websocket connection behind `WebSocketClient`."""

    connection: trio_websocket.WebSocketConnection

    async def send(self, text: str) -> None:
        try:
            await self.connection.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise WebSocketError(f"connection closed: {exc.reason}", retryable=True) from None

    async def receive(self) -> str:
        try:
            message = await self.connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise WebSocketError(f"connection closed: {exc.reason}", retryable=True) from None
        return message if isinstance(message, str) else message.decode()

    @property
    def closed(self) -> bool:
        return self.connection.closed is not None

    async def aclose(self) -> None:
        # Broken already: closed, as asked.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.connection.aclose()


@attrs.define
class _AsyncioWebSocket:
    """A ``websockets`` connection behind `WebSocketClient`."""

    connection: ClientConnection

    async def send(self, text: str) -> None:
        try:
            await self.connection.send(text)
        except WebSocketException as exc:
            raise WebSocketError(f"connection closed: {exc!r}", retryable=True) from None

    async def receive(self) -> str:
        try:
            message = await self.connection.recv()
        except WebSocketException as exc:
            raise WebSocketError(f"connection closed: {exc!r}", retryable=True) from None
        return message if isinstance(message, str) else message.decode()

    @property
    def closed(self) -> bool:
        return self.connection.state is not State.OPEN

    async def aclose(self) -> None:
        await self.connection.close()


def _refused(url: str, status: int, body: bytes | bytearray | None) -> WebSocketError:
    """The error for a handshake the server answered with ``status`` instead of 101."""
    return WebSocketError(
        f"{url} refused the WebSocket with HTTP {status}",
        retryable=status >= 500,
        status=status,
        body=bytes(body or b"")[:MAX_REFUSAL_BYTES],
    )


@contextlib.asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_bytes: int,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_seconds: float = CONNECT_SECONDS,
    close_seconds: float = CLOSE_SECONDS,
) -> AsyncIterator[WebSocketClient]:
    """Connect to ``url`` (``ws://`` or ``wss://``); close the connection on exit.

    Args:
        headers: sent with the handshake (``Authorization``).
        ssl_context: for ``wss://`` (default: the system's trusted authorities).

    Raises:
        WebSocketError: the server could not be reached, or did not complete the
            handshake within ``connect_seconds`` (retryable); or it refused the handshake
            (``status``: retryable only for a 5xx).

    Cancellation: closing runs when the block is left either way; a peer that does not
    answer the closing handshake within ``close_seconds`` has its connection dropped.
    """
    sent = list((headers or {}).items())
    tls = (ssl_context or ssl.create_default_context()) if url.startswith("wss://") else None
    if sniffio.current_async_library() == "trio":
        async with _open_trio(url, max_message_bytes, sent, tls, connect_seconds,
                              close_seconds) as ws:  # fmt: skip
            yield ws
    else:
        async with _open_asyncio(url, max_message_bytes, sent, tls, connect_seconds,
                                 close_seconds) as ws:  # fmt: skip
            yield ws


@contextlib.asynccontextmanager
async def _open_trio(
    url: str,
    max_message_bytes: int,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None,
    connect_seconds: float,
    close_seconds: float,
) -> AsyncIterator[WebSocketClient]:
    # Not trio-websocket's open_websocket_url: after a handshake that times out, it waits
    # for its reader task, which waits for the silent server (trio-websocket 0.12.2).
    own: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:  # the library's reader task
            try:
                with trio.fail_after(connect_seconds):
                    connection = await _connect_trio(
                        nursery, url, ssl_context, headers, max_message_bytes
                    )
            except WebSocketError as exc:
                own = exc
                nursery.cancel_scope.cancel()
            except trio.TooSlowError as exc:
                own = WebSocketError(
                    f"no WebSocket handshake from {url} within {connect_seconds:g} s",
                    retryable=True,
                )
                own.__cause__ = exc
                nursery.cancel_scope.cancel()
            except trio_websocket.ConnectionRejected as exc:
                own = _refused(url, exc.status_code, exc.body)
                own.__cause__ = exc
                nursery.cancel_scope.cancel()
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
                    OSError) as exc:  # fmt: skip
                own = WebSocketError(f"cannot open a WebSocket to {url}: {exc!r}", retryable=True)
                own.__cause__ = exc
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield _TrioWebSocket(connection)
                except BaseException as exc:
                    own = exc
                    raise
                finally:
                    # Cancelled: the library's reader is cancelled too, so no closing
                    # handshake can complete; the connection is just dropped.
                    graceful = 0.0 if isinstance(own, trio.Cancelled) else close_seconds
                    with trio.move_on_after(graceful, shield=True):
                        await connection.aclose()
                    # The library's reader ends once the closing handshake is done (maybe
                    # by another task's `aclose`: cancelling it now would stall that one);
                    # a peer that never answers has it cancelled after `close_seconds`.
                    nursery.cancel_scope.deadline = trio.current_time() + close_seconds
    except BaseExceptionGroup as group:
        # The nursery wraps what the block raised; raise it as the block raised it (the
        # reader task itself ends quietly when cancelled).
        if own is not None and group.exceptions == (own,):
            raise own from own.__cause__
        # A refused handshake may come from the library's reader task instead.
        rejected, rest = group.split(trio_websocket.ConnectionRejected)
        if rejected is not None and rest is None:
            if isinstance(own, WebSocketError):
                raise own from own.__cause__
            first = rejected.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, trio_websocket.ConnectionRejected)
            raise _refused(url, first.status_code, first.body) from first
        raise
    if isinstance(own, WebSocketError):
        raise own


async def _connect_trio(
    nursery: trio.Nursery,
    url: str,
    ssl_context: ssl.SSLContext | None,
    headers: list[tuple[str, str]],
    max_message_bytes: int,
) -> trio_websocket.WebSocketConnection:
    """Open the TCP (and TLS) connection, then the WebSocket on it.

    The TLS handshake is done here, not by trio-websocket, whose reader swallows a failed
    one (a certificate that does not verify would look like a server that never answers).

    Raises:
        WebSocketError: the TLS handshake failed (not retryable: the certificate is not
            trusted, or names another host).
    """
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    stream = await trio.open_tcp_stream(host, port)
    if secure:
        tls = trio.SSLStream(stream, ssl_context or ssl.create_default_context(),
                             server_hostname=host, https_compatible=True)  # fmt: skip
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            raise WebSocketError(f"TLS with {url} failed: {exc.__cause__ or exc}",
                                 retryable=False) from exc  # fmt: skip
        stream = tls
    return await trio_websocket.wrap_client_stream(
        nursery, stream, parts.netloc, resource, max_message_size=max_message_bytes,
        extra_headers=[(key.encode(), value.encode()) for key, value in headers],
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _open_asyncio(
    url: str,
    max_message_bytes: int,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None,
    connect_seconds: float,
    close_seconds: float,
) -> AsyncIterator[WebSocketClient]:
    try:
        connection = await connect(
            url,
            max_size=max_message_bytes,
            compression=None,
            open_timeout=connect_seconds,
            close_timeout=close_seconds,
            additional_headers=headers,
            ssl=ssl_context,
        )
    except InvalidStatus as exc:
        response = exc.response
        raise _refused(url, response.status_code, response.body) from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise WebSocketError(f"cannot open a WebSocket to {url}: {exc!r}", retryable=True) from exc
    try:
        yield _AsyncioWebSocket(connection)
    finally:
        with anyio.move_on_after(close_seconds, shield=True):
            await connection.close()
