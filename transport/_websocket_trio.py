"""The WebSocket client under trio: trio-websocket behind `transport.websocket`'s
`WebSocketClient`. Loaded by `transport.websocket.open_websocket` on first use."""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from typing import TYPE_CHECKING

import attrs
import trio
import trio_websocket
import wsproto.utilities

from ._errors import WebSocketError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


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


@contextlib.asynccontextmanager
async def open_trio(
    url: str,
    max_message_bytes: int,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None,
    connect_seconds: float,
    close_seconds: float,
) -> AsyncIterator[_TrioWebSocket]:
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
                own = WebSocketError.refused(url, exc.status_code, exc.body)
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
        # The peer's ping arriving as the block's end closes the connection: the library's
        # reader answers it in a state where wsproto allows no pong (hypercorn pings as
        # soon as a session opens, so a short session meets this). Nothing is lost.
        late, others = group.split(wsproto.utilities.LocalProtocolError)
        if late is not None and others is None and own is None:
            return
        # A refused handshake may come from the library's reader task instead.
        rejected, rest = group.split(trio_websocket.ConnectionRejected)
        if rejected is not None and rest is None:
            if isinstance(own, WebSocketError):
                raise own from own.__cause__
            first = rejected.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, trio_websocket.ConnectionRejected)
            raise WebSocketError.refused(url, first.status_code, first.body) from first
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
    # In TLS 1.3 the server judges the client's certificate after the client's handshake
    # is done: a refusal comes as an alert on the first read, in trio-websocket's reader,
    # which swallows it. `_TlsAlerts` catches it there and ends the wait for the upgrade.
    refused = trio.CancelScope()
    watched = _TlsAlerts(stream, refused)
    with refused:
        return await trio_websocket.wrap_client_stream(
            # (any trio stream does: the type names the two it describes in its repr)
            nursery, watched, parts.netloc, resource, max_message_size=max_message_bytes,  # type: ignore[arg-type]
            extra_headers=[(key.encode(), value.encode()) for key, value in headers],
        )  # fmt: skip
    raise WebSocketError(f"TLS with {url} failed: {watched.alert}", retryable=False)


class _TlsAlerts(trio.abc.Stream):
    """``stream``, noting a TLS error its reads raise (``alert``) and then cancelling
    ``refused``."""

    def __init__(self, stream: trio.abc.Stream, refused: trio.CancelScope) -> None:
        self._stream = stream
        self._refused = refused
        self.alert: ssl.SSLError | None = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, ssl.SSLError) and self.alert is None:
                self.alert = exc.__cause__
                self._refused.cancel()
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()
