"""The server's side of a WebSocket session: concurrent requests, pushes, subscriptions.

A `ServerSession` serves one connection at ``/api/v1/session`` with the session protocol
(`aiki.protocol`): it reads request frames, runs each in a task of its own nursery
(at most `SESSION_IN_FLIGHT` at once; more wait), and sends each reply when it is ready,
so replies may come in any order. A worker registered on the session gets pushes here
(`StopRun`); a subscription made on it has a forwarder task that sends its updates. When
the connection ends, the session ends, and with it its requests in progress, its
subscriptions and its worker's push route. A failing session ends that session only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol import (
    OPERATIONS,
    Incoming,
    RequestError,
    StopRun,
    error_frame,
    publication_frames,
    push_frame,
    read_request,
    reply_frame,
)
from ._replies import guarded
from .operations import HANDLERS, Caller, Services, dispatch

if TYPE_CHECKING:
    from ._broadcaster import Subscriber

logger = logging.getLogger(__name__)

SESSION_IN_FLIGHT: Final = 256
"""Requests one WebSocket session may have in progress; more wait (backpressure)."""


@attrs.define(eq=False)
class ServerSession:
    """One WebSocket session (see the module docstring)."""

    services: Services
    websocket: WebSocket
    max_bytes: int
    worker_id: str | None = None
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    _slots: trio.Semaphore = attrs.Factory(lambda: trio.Semaphore(SESSION_IN_FLIGHT))
    _forwarders: dict[str, trio.CancelScope] = attrs.Factory(dict)
    _nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        """Accept the connection and serve it until it closes."""
        await self.websocket.accept()
        gauge = self.services.metrics.websocket_sessions
        gauge.inc()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                while True:
                    try:
                        text = await self.websocket.receive_text()
                    except WebSocketDisconnect:
                        break
                    await self._slots.acquire()
                    nursery.start_soon(self._answer, text)
                # The peer is gone: replies in progress have nowhere to go.
                nursery.cancel_scope.cancel()
        finally:
            gauge.dec()
            if self.worker_id is not None:
                self.services.sessions.detach(self.worker_id, self.push)
            for subscription in self._forwarders:
                self.services.subscriptions.remove(subscription)

    # -- what handlers may ask of the session (`operations.SessionHandle`) --------------------

    def bind_worker(self, worker_id: str) -> None:
        """This session is worker ``worker_id``'s: route pushes for it here."""
        if self.worker_id is not None and self.worker_id != worker_id:
            self.services.sessions.detach(self.worker_id, self.push)
        self.worker_id = worker_id
        self.services.sessions.attach(worker_id, self.push)

    @property
    def subscription_count(self) -> int:
        """How many subscriptions this session holds."""
        return len(self._forwarders)

    def reserve(self, subscriber: Subscriber) -> None:
        """Count ``subscriber`` as this session's; its pushes start after the reply."""
        self._forwarders[subscriber.id] = trio.CancelScope()

    def unfollow(self, subscription: str) -> None:
        """End one of this session's subscriptions (not one of another session's)."""
        scope = self._forwarders.pop(subscription, None)
        if scope is not None:
            scope.cancel()
            self.services.subscriptions.remove(subscription)

    # -- sending -------------------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self.websocket.send_text(frame.decode())

    async def push(self, message: StopRun) -> None:
        """Send a server push to the worker."""
        await self._send(push_frame(message))

    async def _forward(self, subscriber: Subscriber, scope: trio.CancelScope) -> None:
        """Push a subscription's updates (batched per frame) until it is cancelled."""
        with scope:
            while True:
                updates, resync = await subscriber.take()
                for frame in publication_frames(subscriber.id, updates, resync=resync):
                    await self._send(frame)

    async def _answer(self, text: str) -> None:
        caller = Caller(session=self)
        try:
            try:
                incoming = read_request(OPERATIONS, text, max_bytes=self.max_bytes)
            except RequestError as exc:
                await self._send(error_frame(exc.frame_id, exc.error))
                return
            frame = await self._reply(incoming, caller)
            if incoming.wants_reply:
                await self._send(frame)
        finally:
            self._slots.release()
            # A subscription's pushes go out only after its reply (the client learns the
            # subscription's ID from the reply).
            for subscriber in caller.followed:
                scope = self._forwarders.get(subscriber.id)
                if scope is not None and self._nursery is not None:
                    self._nursery.start_soon(self._forward, subscriber, scope)

    async def _reply(self, incoming: Incoming, caller: Caller) -> bytes:
        async def call() -> bytes:
            reply = await dispatch(
                HANDLERS, self.services, incoming.operation, incoming.request, caller
            )
            return reply_frame(incoming, reply)

        status, frame = await guarded(call)
        if status != 200:  # frame is {"error": {...}}: answer the request's id with it
            return b'{"id":' + incoming.frame_id + b"," + frame[1:]
        return frame
