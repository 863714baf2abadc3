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
from typing import TYPE_CHECKING, Final, Protocol

import sniffio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

CONNECT_SECONDS: Final = 5.0
"""How long opening a connection (TCP and the WebSocket handshake) may take."""
CLOSE_SECONDS: Final = 2.0
"""How long the closing handshake may take before the connection is dropped."""


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
    # The driver for the running event loop, loaded on first use: a process that never
    # connects under trio never loads trio-websocket (nor websockets under trio).
    opened: contextlib.AbstractAsyncContextManager[WebSocketClient]
    if sniffio.current_async_library() == "trio":
        from ._websocket_trio import open_trio

        opened = open_trio(url, max_message_bytes, sent, tls, connect_seconds, close_seconds)
    else:
        from ._websocket_asyncio import open_asyncio

        opened = open_asyncio(url, max_message_bytes, sent, tls, connect_seconds, close_seconds)
    async with opened as ws:
        yield ws
