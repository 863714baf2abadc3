"""The WebSocket client under asyncio: ``websockets`` behind `transport.websocket`'s
`WebSocketClient`. Loaded by `transport.websocket.open_websocket` on first use."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.protocol import State

from ._errors import WebSocketError

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator


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


@contextlib.asynccontextmanager
async def open_asyncio(
    url: str,
    max_message_bytes: int,
    headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None,
    connect_seconds: float,
    close_seconds: float,
) -> AsyncIterator[_AsyncioWebSocket]:
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
        raise WebSocketError.refused(url, response.status_code, response.body) from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise WebSocketError(f"cannot open a WebSocket to {url}: {exc!r}", retryable=True) from exc
    try:
        yield _AsyncioWebSocket(connection)
    finally:
        with anyio.move_on_after(close_seconds, shield=True):
            await connection.close()
