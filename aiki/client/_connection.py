"""One session over one WebSocket: requests in flight, server pushes, subscriptions.

The I/O half of the session protocol (`aiki.protocol.ClientProtocol` is the other half),
shared by the client's session, its watches and the worker's link, under trio and
asyncio alike (anyio primitives; the WebSocket comes from `transport.websocket.open_websocket`).

A `SessionConnection` is driven in one of two ways: a reader task runs `read` for as
long as the connection is open (the client session, the worker link), or the caller
pumps frames itself with `call_pulling` and `next_publication` (a watch with a
connection of its own, under asyncio). Either way, once the connection ends, every
request still waiting gets `aiki.UnavailableError` and so does every later one.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import attrs
import orjson

from transport import TransportError, WebSocketError
from transport.tls import client_tls

from ..errors import AikiError, UnauthenticatedError, UnavailableError, ValidationError
from ..protocol import (
    OPERATIONS,
    ClientProtocol,
    FrameError,
    Published,
    Pushed,
    Replied,
    StopRun,
    Subscribe,
    Subscribed,
    Unsubscribe,
    decode_error,
)

if TYPE_CHECKING:
    import ssl

    from transport.websocket import WebSocketClient

    from ..protocol import Request

P = TypeVar("P")

logger = logging.getLogger(__name__)

PUSH_QUEUE_LIMIT: Final = 4096
"""Frames a subscription may have waiting; beyond that they are dropped for a resync."""


@attrs.define(eq=False)
class PushQueue:
    """The live updates of one subscription, as they arrived."""

    frames: collections.deque[Published] = attrs.Factory(collections.deque)
    overflowed: bool = False
    closed: UnavailableError | None = None
    _ready: anyio.Event = attrs.Factory(anyio.Event)

    def put(self, frame: Published) -> None:
        """Queue ``frame``; past `PUSH_QUEUE_LIMIT` the queue is dropped for a resync."""
        if len(self.frames) >= PUSH_QUEUE_LIMIT:
            self.frames.clear()
            self.overflowed = True
        else:
            self.frames.append(frame)
        self._ready.set()

    def close(self, reason: UnavailableError) -> None:
        """No more frames will come: `get` raises ``reason`` once the queue is empty."""
        self.closed = reason
        self._ready.set()

    def get_nowait(self) -> Published | None:
        """The next frame (a resync marker after an overflow), or None if none waits.

        Raises:
            aiki.UnavailableError: the connection ended and nothing is left.
        """
        if self.overflowed:
            self.overflowed = False
            return Published(subscription="", resync=True)
        if self.frames:
            return self.frames.popleft()
        if self.closed is not None:
            raise self.closed
        return None

    async def get(self) -> Published:
        """The next frame, waiting for one (see `get_nowait`)."""
        while (frame := self.get_nowait()) is None:
            await self._ready.wait()
            self._ready = anyio.Event()
        return frame


def clean_key(api_key: str | None) -> str | None:
    """``api_key`` without the spaces and line breaks a copy-paste adds around it.

    Raises:
        aiki.UnauthenticatedError: what is left is not printable ASCII without spaces,
            as every key is (the message never quotes it: it is a secret).
    """
    if api_key is None:
        return None
    key = api_key.strip()
    if not key or not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise UnauthenticatedError(
            f"the API key given ({len(api_key)} characters) is not one: a key is printable "
            "ASCII without spaces (aiki_<prefix>_<secret>); check AIKI_API_KEY or --api-key"
        )
    return key


def auth_headers(api_key: str | None, namespace: str | None = None) -> dict[str, str]:
    """The headers that present ``api_key`` (none without one; trimmed, `clean_key`),
    acting in ``namespace`` (if given: a key of every namespace then acts in that one
    alone).

    Raises:
        aiki.UnauthenticatedError: ``api_key`` is not shaped like a key.
    """
    key = clean_key(api_key)
    found = {} if key is None else {"authorization": f"Bearer {key}"}
    if namespace is not None:
        found["aiki-namespace"] = namespace
    return found


def answer_error(status: int, body: bytes) -> AikiError:
    """The error a server's non-200 answer stands for (its ``{"error": ...}`` body)."""
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return AikiError(f"server answered {status}: {body[:200]!r}")
    return decode_error(error)


def connect_error(url: str, exc: WebSocketError) -> AikiError:
    """What a failure to open a session means: the server's refusal (a bad key:
    `aiki.UnauthenticatedError`), or `aiki.UnavailableError`."""
    if exc.status is not None and 400 <= exc.status < 500:
        return answer_error(exc.status, exc.body)
    return UnavailableError(f"cannot reach the Aiki server at {url}: {exc}")


Deliver = Callable[[object], None]
"""Receives a request's decoded reply, or the `aiki.AikiError` it ended with."""


class SessionConnection:
    """Requests, pushes and subscriptions over one open WebSocket.

    Args:
        websocket: the open connection (it belongs to the caller, who closes it).
        url: the server's base URL, for error messages.
        on_push: called with each command the server pushes (to a worker).
    """

    def __init__(
        self,
        websocket: WebSocketClient,
        url: str,
        *,
        on_push: Callable[[StopRun], None] | None = None,
    ) -> None:
        self.url = url
        self._websocket = websocket
        self._protocol = ClientProtocol(OPERATIONS)
        self._on_push = on_push
        self._pending: dict[int, Callable[[Replied | UnavailableError], None]] = {}
        self._feeds: dict[str, PushQueue] = {}
        self.ended: UnavailableError | None = None
        """Why the connection ended (None while it is open)."""

    # -- requests ------------------------------------------------------------------------------

    def _register(
        self, request: Request[P], deliver: Callable[[P | AikiError], None]
    ) -> tuple[int, str] | None:
        """Number ``request`` and remember who gets its reply (None: the connection has
        ended, and ``deliver`` was told so)."""
        if self.ended is not None:
            deliver(self.ended)
            return None
        outgoing = self._protocol.request(request)
        request_id = outgoing.request_id
        assert request_id is not None

        def on_reply(replied: Replied | UnavailableError) -> None:
            if isinstance(replied, UnavailableError):
                deliver(replied)
                return
            try:
                deliver(outgoing.result(replied))
            except AikiError as exc:
                deliver(exc)
            except FrameError as exc:
                deliver(UnavailableError(f"session with {self.url}: {exc}"))

        self._pending[request_id] = on_reply
        return request_id, outgoing.frame

    async def _transmit(self, request_id: int, frame: str) -> None:
        try:
            await self._websocket.send(frame)
        except WebSocketError as exc:
            on_reply = self._pending.pop(request_id, None)
            if on_reply is not None:
                on_reply(UnavailableError(f"session with {self.url} closed: {exc}"))

    async def send_request(
        self, request: Request[P], deliver: Callable[[P | AikiError], None]
    ) -> None:
        """Send ``request``; its reply (or error) is passed to ``deliver`` when it comes.

        ``deliver`` is called exactly once, also if sending fails or the connection ends
        first (with `aiki.UnavailableError`).

        Cancellation: if cancelled while sending, ``deliver`` is told the request was
        abandoned.
        """
        registered = self._register(request, deliver)
        if registered is None:
            return
        request_id, frame = registered
        try:
            await self._transmit(request_id, frame)
        except BaseException:
            on_reply = self._pending.pop(request_id, None)
            if on_reply is not None:
                on_reply(UnavailableError(f"request to {self.url} abandoned"))
            raise

    async def call(self, request: Request[P]) -> P:
        """Send ``request`` and wait for its reply, read by a task running `read`.

        Raises:
            aiki.AikiError: the server's error for this request.
            aiki.UnavailableError: the connection ended before the reply came.

        Cancellation: the reply, if it comes, is dropped.
        """
        done = anyio.Event()
        box: list[P | AikiError] = []

        def deliver(reply: P | AikiError) -> None:
            box.append(reply)
            done.set()

        registered = self._register(request, deliver)
        if registered is not None:
            request_id, frame = registered
            try:
                await self._transmit(request_id, frame)
                await done.wait()
            finally:
                self._pending.pop(request_id, None)
        return self._unwrap(box[0])

    async def call_pulling(self, request: Request[P]) -> P:
        """`call` for a connection without a reader task: read frames until the reply."""
        box: list[P | AikiError] = []
        await self.send_request(request, box.append)
        while not box:
            await self.pump()
        return self._unwrap(box[0])

    async def notify(self, request: Request[object]) -> None:
        """Send ``request`` without wanting its reply (best effort: if the connection is
        gone, so is whatever the request was about)."""
        if self.ended is None:
            with contextlib.suppress(WebSocketError):
                await self._websocket.send(self._protocol.notice(request).frame)

    @staticmethod
    def _unwrap(reply: P | AikiError) -> P:
        if isinstance(reply, AikiError):
            raise reply
        return reply

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(
        self, request: Subscribe, *, pulling: bool = False
    ) -> tuple[Subscribed, PushQueue]:
        """Subscribe; return the reply and the queue its live updates arrive in.

        Raises:
            aiki.AikiError: the server refused the subscription.
            aiki.UnavailableError: the connection ended.
        """
        if pulling:
            subscribed = await self.call_pulling(request)
        else:
            subscribed = await self.call(request)
        # Updates may have arrived before the reply was read: the queue kept them.
        queue = self._feeds.setdefault(subscribed.subscription, PushQueue())
        if self.ended is not None:
            queue.close(self.ended)
        return subscribed, queue

    async def unsubscribe(self, subscription: str) -> None:
        """End a subscription without waiting for the server's reply."""
        self._feeds.pop(subscription, None)
        await self.notify(Unsubscribe(subscription=subscription))

    async def next_publication(self, queue: PushQueue) -> Published:
        """The next frame of ``queue``, on a connection without a reader task."""
        while (frame := queue.get_nowait()) is None:
            await self.pump()
        return frame

    # -- reading -------------------------------------------------------------------------------

    async def read(self) -> None:
        """Read frames until the connection ends (then fail whatever still waits)."""
        try:
            while True:
                await self.pump()
        except UnavailableError:
            pass

    async def pump(self) -> None:
        """Read one frame and hand it on.

        Raises:
            aiki.UnavailableError: the connection ended (now or before).
        """
        if self.ended is not None:
            raise self.ended
        try:
            text = await self._websocket.receive()
            event = self._protocol.receive(text)
        except WebSocketError as exc:
            raise self._end(f"session with {self.url} dropped: {exc}") from None
        except FrameError as exc:
            logger.warning("session with %s: %s; closing it", self.url, exc)
            raise self._end(f"session with {self.url} ended: the server sent {exc}") from None
        match event:
            case Replied():
                on_reply = self._pending.pop(event.request_id, None)
                if on_reply is not None:
                    on_reply(event)
            case Pushed():
                if self._on_push is not None:
                    self._on_push(event.message)
            case Published():
                self._feeds.setdefault(event.subscription, PushQueue()).put(event)

    def _end(self, why: str) -> UnavailableError:
        if self.ended is None:
            self.ended = UnavailableError(why)
            pending, self._pending = self._pending, {}
            for on_reply in pending.values():
                on_reply(UnavailableError(f"{why} before the reply arrived"))
            for queue in self._feeds.values():
                queue.close(self.ended)
        return self.ended

    async def aclose(self) -> None:
        """Close the connection (the reader, if any, then ends)."""
        self._end(f"session with {self.url} closed")
        await self._websocket.aclose()


def tls_for(
    ca_file: str | None, client_cert: str | None = None, client_key: str | None = None
) -> ssl.SSLContext | None:
    """The TLS context trusting ``ca_file`` and presenting ``client_cert`` (with
    ``client_key``) to servers that ask for one; None when neither is given (the
    defaults: the system's authorities, no certificate).

    Raises:
        aiki.ValidationError: ``ca_file`` cannot be read or holds no certificate, or
            ``client_cert`` and ``client_key`` are not a certificate and its key.
    """
    if not ca_file and not client_cert:
        return None
    try:
        return client_tls(ca_file or None, client_cert or None, client_key or None)
    except TransportError as exc:
        field = "client_cert" if "client certificate" in str(exc) else "ca_file"
        what = "a certificate and its key" if field == "client_cert" else "a CA certificate file"
        raise ValidationError(str(exc), errors=(f"not {what} @ {field}",)) from exc


def reason_of(exc: BaseException) -> str:
    """What ``exc`` says, or the first of its causes that says something (httpx's errors
    may say nothing themselves: a TLS alert is in their cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__
