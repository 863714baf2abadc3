"""The server's side of a WebSocket session: concurrent requests, pushes, subscriptions.

A `ServerSession` serves one connection at ``/api/v1/session`` with the session protocol
(`aiki.protocol`): it reads request frames, runs each in a task of its own nursery
(at most `SESSION_IN_FLIGHT` at once; more wait), and sends each reply when it is ready,
so replies may come in any order. A worker registered on the session gets pushes here
(`StopRun`); a subscription made on it has a forwarder task that sends its updates. When
the connection ends, the session ends, and with it its requests in progress, its
subscriptions and its worker's push route. A failing session ends that session only.

A session acts with the key its upgrade presented (`aiki.server._auth`), checked again
at every request and every `aiki.server._auth.CACHE_SECONDS`: once the key is revoked or
expires, the session is closed (``1008``) within about a second. Each request counts
against the key's quota (`aiki.server._quotas`): one over it is answered
`aiki.RateLimitedError`, and the session carries on.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from starlette.websockets import WebSocket

from ..errors import (
    PayloadTooLargeError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
)
from ..protocol import (
    MAX_MESSAGE_BYTES,
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
from ._auth import BAD_KEY, CACHE_SECONDS, Authenticator, Principal
from ._replies import guarded
from .operations import HANDLERS, Caller, Services, admit, dispatch
from .store.keys import Credential

if TYPE_CHECKING:
    from ..protocol import Operation
    from ._broadcaster import Subscriber

logger = logging.getLogger(__name__)

SESSION_IN_FLIGHT: Final = 64
"""Requests one WebSocket session may have in progress; more wait (backpressure)."""
MAX_QUEUED_BYTES: Final = 8 * 1024 * 1024
"""Replies and pushes waiting to be sent to one session; more, and the session is closed
(the peer does not read what it asked for)."""
SEND_SECONDS: Final = 10.0
"""How long sending one frame may take before the session is closed (a peer that stopped
reading)."""
CLOSE_SECONDS: Final = 1.0
CLOSE_TOO_SLOW: Final = 1008
"""Close code for a peer that does not keep up (policy violation)."""
CLOSE_KEY_REVOKED: Final = 1008
"""Close code for a session whose key was revoked or expired (policy violation)."""
CLOSE_BINARY: Final = 1003
"""Close code for a binary frame: the protocol is JSON text."""


@attrs.define(eq=False)
class ServerSession:
    """One WebSocket session (see the module docstring).

    Nothing waits on the peer but this session's own writer task: replies and pushes are
    queued (at most `MAX_QUEUED_BYTES`), so a push from an actor (a timed-out run's stop,
    a subscription's updates) never blocks it, and a peer that stops reading loses its
    session, not the server its timers.
    """

    services: Services
    websocket: WebSocket
    max_bytes: int
    principal: Principal
    credential: Credential | None
    """What is kept of the key the upgrade presented (None without authentication)."""
    worker_id: str | None = None
    session_id: str = attrs.Factory(lambda: secrets.token_hex(12))
    """Names this session in the worker's row while it is the worker's (not a secret)."""
    incarnation: str = attrs.Factory(lambda: secrets.token_urlsafe(24))
    """What a worker registering on this session without an incarnation of its own is
    held by (`aiki.protocol.RegisterWorker`)."""
    _slots: trio.Semaphore = attrs.Factory(lambda: trio.Semaphore(SESSION_IN_FLIGHT))
    _forwarders: dict[str, trio.CancelScope] = attrs.Factory(dict)
    _nursery: trio.Nursery | None = None
    _outbox: collections.deque[bytes] = attrs.Factory(collections.deque)
    _queued_bytes: int = 0
    _queued: trio.Event = attrs.Factory(trio.Event)
    _enqueued: int = 0
    """Frames queued so far (a count, for `_sent` to be compared with)."""
    _sent: int = 0
    """Frames sent so far."""
    _progress: trio.Event = attrs.Factory(trio.Event)
    """Set (and replaced) each time a frame has been sent."""
    _closing: str | None = None
    """Why the session is ending (None while it serves)."""
    _close_code: int = 1000

    async def serve(self) -> None:
        """Accept the connection and serve it until it closes (or is closed)."""
        await self.websocket.accept()
        gauge = self.services.metrics.websocket_sessions
        gauge.inc()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write)
                authenticator, credential = self.services.authenticator, self.credential
                if authenticator is not None and credential is not None:
                    nursery.start_soon(self._watch_key, authenticator, credential)
                while True:
                    message = await self.websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    text = message.get("text")
                    if text is None:
                        self._close("sent a binary frame (the protocol is JSON text)",
                                    CLOSE_BINARY)  # fmt: skip
                        break
                    await self._slots.acquire()
                    nursery.start_soon(self._answer, text)
                # The peer is gone (or closed): replies in progress have nowhere to go.
                nursery.cancel_scope.cancel()
            if self._closing is not None:
                with trio.move_on_after(CLOSE_SECONDS), contextlib.suppress(Exception):
                    await self.websocket.close(code=self._close_code)
        finally:
            gauge.dec()
            if self.worker_id is not None:
                self.services.sessions.detach(self.worker_id, self.push)
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_SECONDS):
                    await self.services.session_ended(self.worker_id, self.session_id)
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

    def _send(self, frame: bytes) -> None:
        """Queue ``frame`` for the writer; never waits. Past `MAX_QUEUED_BYTES` the session
        is closed instead (one frame, up to `MAX_MESSAGE_BYTES`, always fits an empty
        outbox)."""
        if self._closing is not None:
            return
        if self._outbox and self._queued_bytes + len(frame) > MAX_QUEUED_BYTES:
            self._close(f"does not read: {self._queued_bytes} bytes wait to be sent",
                        CLOSE_TOO_SLOW)  # fmt: skip
            return
        self._outbox.append(frame)
        self._queued_bytes += len(frame)
        self._enqueued += 1
        self._queued.set()

    async def _write(self) -> None:
        """Send queued frames in order, each within `SEND_SECONDS`."""
        while True:
            while not self._outbox:
                await self._queued.wait()
                self._queued = trio.Event()
            frame = self._outbox.popleft()
            with trio.move_on_after(SEND_SECONDS) as sending:
                await self.websocket.send_text(frame.decode())
            if sending.cancelled_caught:
                self._close(f"took over {SEND_SECONDS:g} s to take one frame", CLOSE_TOO_SLOW)
                return
            self._queued_bytes -= len(frame)
            self._sent += 1
            self._progress.set()
            self._progress = trio.Event()

    def _close(self, why: str, code: int) -> None:
        """End the session (its tasks are cancelled; the connection is closed after)."""
        if self._closing is None:
            self._closing, self._close_code = why, code
            logger.warning("session %s %s: closing it", self.worker_id or "(client)", why,
                           extra={"worker_id": self.worker_id})  # fmt: skip
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()

    def push(self, message: StopRun) -> None:
        """Send a server push to the worker (queued: never waits)."""
        self._send(push_frame(message))

    async def _forward(self, subscriber: Subscriber, scope: trio.CancelScope) -> None:
        """Push a subscription's updates (batched per frame) until it is cancelled."""
        # Updates are taken from the subscription's queue only once its frames before have
        # been sent: a peer that reads slowly makes that queue overflow (it gets a resync
        # marker), not this session's outbox grow; meanwhile updates gather into fewer,
        # larger frames.
        with scope:
            while True:
                updates, resync = await subscriber.take()
                for frame in publication_frames(subscriber.id, updates, resync=resync):
                    self._send(frame)
                mark = self._enqueued
                while self._sent < mark:
                    await self._progress.wait()

    async def _watch_key(self, authenticator: Authenticator, credential: Credential) -> None:
        """Close the session once its key is no longer valid."""
        while True:
            await trio.sleep(CACHE_SECONDS)
            with contextlib.suppress(UnavailableError):  # (storage down: keep serving)
                if await authenticator.principal_of(credential) is None:
                    self._close(f"acts with {self.principal}, which was revoked or expired",
                                CLOSE_KEY_REVOKED)  # fmt: skip
                    return

    async def _current_principal(self) -> Principal | None:
        """The session's principal, if its key is still valid."""
        authenticator = self.services.authenticator
        if authenticator is None or self.credential is None:
            return self.principal
        return await authenticator.principal_of(self.credential)

    def _admit(self, operation: Operation[Any, Any]) -> None:
        admit(operation, self.principal)

    async def _answer(self, text: str) -> None:
        caller = Caller(principal=self.principal, session=self)
        try:
            try:
                incoming = read_request(OPERATIONS, text, max_bytes=self.max_bytes,
                                        admit=self._admit)  # fmt: skip
            except RequestError as exc:
                self._send(error_frame(exc.frame_id, exc.error))
                return
            try:
                valid = await self._current_principal()
            except UnavailableError as exc:
                self._send(error_frame(incoming.frame_id, exc))
                return
            if valid is None:
                self._send(error_frame(incoming.frame_id, UnauthenticatedError(BAD_KEY)))
                self._close(f"acts with {self.principal}, which was revoked or expired",
                            CLOSE_KEY_REVOKED)  # fmt: skip
                return
            quotas = self.services.quotas
            if quotas is not None and valid.prefix is not None:
                try:
                    quotas.check(valid.prefix, valid.namespace)
                except RateLimitedError as exc:
                    self._send(error_frame(incoming.frame_id, exc))
                    return
            frame = await self._reply(incoming, caller)
            if incoming.wants_reply:
                self._send(frame)
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
        if len(frame) > MAX_MESSAGE_BYTES:  # more than a client takes in one message
            too_large = PayloadTooLargeError(
                f"the {incoming.operation.name} reply is {len(frame)} bytes, over the "
                f"{MAX_MESSAGE_BYTES} a session message carries: ask for fewer (a smaller "
                "limit, fewer runs)"
            )
            return error_frame(incoming.frame_id, too_large)
        return frame
