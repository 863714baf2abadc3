"""The worker's link to the server: one WebSocket session carrying every request.

Other actors `ask` the link with a `Call`; the link numbers the request, sends it, and a
reader task routes each reply back by number, so any number of requests are in flight
at once. On (re)connect the link registers the worker. If the connection drops, every
call in flight is answered with `aiki.UnavailableError` and the link crashes; its
supervisor reconnects it (with backoff), and calls still in its mailbox go out on the
new session.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Final

import attrs
import orjson
import trio
import trio_websocket

from actors import Address, answer, ask

from .._operation_table import OPERATION_OF, OPERATIONS
from .._protocol import ERROR_BODY, PUSH, RegisterWorker, StopRun
from ..errors import AikiError, UnavailableError, error_from_reply

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
FIRST_CONNECT_SECONDS: Final = 10.0

Reply = object

_CONNECTION_LOST: Final = (
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    OSError,
    UnavailableError,
)


@attrs.frozen(kw_only=True)
class Call:
    """Send ``request`` to the server; the reply (or the error) comes back on ``reply_to``."""

    request: object
    reply_to: trio.MemorySendChannel[Reply | AikiError] = attrs.field(eq=False, repr=False)


def _error(body: object) -> AikiError:
    error = ERROR_BODY.structure(body)
    return error_from_reply(error.code, error.message, errors=error.errors, run_id=error.run_id)


async def call(link: Address[Call], request: object) -> object:
    """Send ``request`` through the link and return the server's reply.

    Put a deadline around it (``trio.fail_after``).

    Raises:
        aiki.AikiError: the server's error (stale revision, not found, ...).
        aiki.UnavailableError: the session dropped before the reply came.
    """
    reply: Reply | AikiError = await ask(
        link, lambda reply_to: Call(request=request, reply_to=reply_to)
    )
    if isinstance(reply, AikiError):
        raise reply
    return reply


@attrs.define
class Link:
    """Actor: the WebSocket session to the server."""

    url: str
    """The server's base URL (``http://...``); the session is at ``/api/v1/session``."""
    registration: RegisterWorker
    on_push: Callable[[StopRun], None] = lambda _message: None
    """Called with each server push (e.g. stop a run that was cancelled)."""
    _pending: dict[int, tuple[str, trio.MemorySendChannel[Reply | AikiError]]] = attrs.field(
        factory=dict, init=False
    )
    _ids: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    _registered: bool = attrs.field(default=False, init=False)

    @property
    def session_url(self) -> str:
        """The WebSocket URL."""
        return (
            self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
            + "/api/v1/session"
        )

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Call],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and register, then send calls until the mailbox closes.

        The first connection must succeed within `FIRST_CONNECT_SECONDS` (a wrong URL is an
        error, not a hang). After that, a lost session is re-established with backoff for
        as long as it takes (the server may be restarting); calls wait in the mailbox.
        """
        connected = False
        deadline = trio.current_time() + FIRST_CONNECT_SECONDS
        delay = 0.1
        while True:
            lost: BaseException | None = None
            try:
                await self._session(inbox, task_status if not connected else None)
            except* _CONNECTION_LOST as group:  # raised from the reader arrives grouped
                lost = group.exceptions[0]
            finally:
                # Whatever ended the session (even a crash), no caller waits for a reply
                # that cannot come: each gets UnavailableError and retries or gives up.
                self._fail_pending(f"session with {self.url} ended")
            if lost is None:
                return  # the mailbox closed: shutdown
            if self._registered:  # the session had been up: reconnect promptly
                connected, delay = True, 0.1
            self._registered = False
            if not connected and trio.current_time() > deadline:
                raise UnavailableError(f"cannot reach the Aiki server at {self.url}: {lost}")
            logger.warning("session with %s lost (%r); reconnecting in %.1f s", self.url,
                           lost, delay)  # fmt: skip
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(
        self,
        inbox: trio.MemoryReceiveChannel[Call],
        task_status: trio.TaskStatus[None] | None,
    ) -> None:
        async with trio_websocket.open_websocket_url(
            self.session_url, max_message_size=MAX_MESSAGE_BYTES
        ) as websocket, trio.open_nursery() as nursery:  # fmt: skip
            nursery.start_soon(self._read_replies, websocket)
            await self._register(websocket)
            self._registered = True
            logger.info("worker %s connected to %s", self.registration.worker_id, self.url,
                        extra={"worker_id": self.registration.worker_id})  # fmt: skip
            if task_status is not None:
                task_status.started()
            async for message in inbox:
                await self._send(websocket, message.request, message.reply_to)
            nursery.cancel_scope.cancel()

    async def _register(self, websocket: trio_websocket.WebSocketConnection) -> None:
        reply_to, replies = trio.open_memory_channel[Reply | AikiError](1)
        await self._send(websocket, self.registration, reply_to)
        with trio.fail_after(30):
            reply = await replies.receive()
        if isinstance(reply, AikiError):
            raise reply

    async def _send(
        self,
        websocket: trio_websocket.WebSocketConnection,
        request: object,
        reply_to: trio.MemorySendChannel[Reply | AikiError],
    ) -> None:
        name = OPERATION_OF[type(request)]
        request_id = next(self._ids)
        self._pending[request_id] = (name, reply_to)
        body = OPERATIONS[name].request.encode(request)
        frame = b'{"id":%d,"op":"%s","body":%s}' % (request_id, name.encode(), body)
        await websocket.send_message(frame.decode())

    async def _read_replies(self, websocket: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = orjson.loads(await websocket.get_message())
            if "push" in frame:
                self.on_push(PUSH.structure(frame["push"]))
                continue
            pending = self._pending.pop(frame["id"], None)
            if pending is None:
                logger.warning("reply to unknown request %s", frame.get("id"))
                continue
            name, reply_to = pending
            if "error" in frame:
                answer(reply_to, _error(frame["error"]))
            else:
                answer(reply_to, OPERATIONS[name].reply.structure(frame["ok"]))

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for _, reply_to in pending.values():
            answer(reply_to, UnavailableError(f"{why} before the reply arrived"))
