"""The worker's link to the server: one WebSocket session carrying every request.

Other actors `ask` the link with a `Call` (`call` does it, typed by the request); the
link sends each request on its `aiki.client.SessionConnection`, whose reader routes each
reply back, so any number of requests are in flight at once. On (re)connect the link
registers the worker. If the connection drops, every call in flight is answered with
`aiki.UnavailableError`, and the link connects again after a jittered backoff; calls
still in its mailbox go out on the new session. Given several servers, it connects to
the next one in the list after a failure: a worker whose server died carries on, with
its claims, through another (its heartbeats keep them; its completions are fenced by
revision as anywhere).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import ssl
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs
import trio

from actors import Address, Backoff, ask
from transport import WebSocketError
from transport.redis_streams import RedisCredentials
from transport.websocket import open_websocket

from ..client import Servers, SessionConnection, auth_headers, connect_error
from ..errors import AikiError, ConflictError, UnavailableError
from ..protocol import (
    DEFAULT_NAMESPACE,
    MAX_MESSAGE_BYTES,
    DeregisterWorker,
    RedisGrant,
    RegisterWorker,
    Request,
    StopRun,
    session_url,
)

logger = logging.getLogger(__name__)

P = TypeVar("P")

REGISTER_SECONDS: Final = 30.0
GOODBYE_SECONDS: Final = 2.0
"""How long a stopping worker waits for the server to note it (`DeregisterWorker`)."""
RECONNECT: Final = Backoff(initial_seconds=0.1, max_seconds=5.0)
"""How long the link waits before each attempt to connect again."""


@attrs.frozen(kw_only=True)
class Call(Generic[P]):
    """Send ``request`` to the server; the reply (or the error) comes back on ``reply_to``."""

    request: Request[P]
    reply_to: trio.MemorySendChannel[P | AikiError] = attrs.field(eq=False, repr=False)
    orphaned: Callable[[P], None] | None = attrs.field(default=None, eq=False, repr=False)
    """Called with a reply that came after its asker stopped waiting (cancelled, or its
    deadline passed): for replies that hand the worker something it must not just drop."""

    def deliver(self, reply: P | AikiError) -> None:
        """Hand the asker ``reply``; one nobody waits for any more goes to `orphaned`."""
        with self.reply_to:
            try:
                self.reply_to.send_nowait(reply)
            except trio.BrokenResourceError:
                if self.orphaned is not None and not isinstance(reply, AikiError):
                    self.orphaned(reply)


async def call(
    link: Address[Call[Any]],
    request: Request[P],
    *,
    orphaned: Callable[[P], None] | None = None,
) -> P:
    """Send ``request`` through the link and return the server's reply.

    Put a deadline around it (``trio.fail_after``). A reply that comes after the caller
    stopped waiting is dropped, or given to ``orphaned``.

    Raises:
        aiki.AikiError: the server's error (stale revision, not found, ...).
        aiki.UnavailableError: the session dropped before the reply came.
    """

    def make(reply_to: trio.MemorySendChannel[P | AikiError]) -> Call[P]:
        return Call(request=request, reply_to=reply_to, orphaned=orphaned)

    reply = await ask(link, make)
    if isinstance(reply, AikiError):
        raise reply
    return reply


@attrs.define
class Registered:
    """What the server told the worker when it registered."""

    namespace: str = DEFAULT_NAMESPACE
    """The namespace the worker serves (its key's): the streams it reads are this one's."""
    stream_shards: int = 1
    """Sub-streams per queue the server publishes to: the worker reads each one."""
    credentials: RedisCredentials | None = None
    """The Redis credentials the server grants this worker (None: it has its own Redis
    URL); each registration's new ones replace them."""
    redis_seconds: float | None = None
    """How long the granted credentials last without a renewal."""

    def granted(self, grant: RedisGrant | None) -> None:
        """Take new Redis credentials, if the server gave some."""
        if grant is not None and self.credentials is not None:
            self.credentials.update(grant.username, grant.password)
            self.redis_seconds = grant.seconds


@attrs.define
class Link:
    """Actor: the WebSocket session to the server."""

    servers: Servers
    """The servers' base URLs (``http://...``), and the one in use."""
    registration: RegisterWorker
    on_push: Callable[[StopRun], None] = lambda _message: None
    """Called with each server push (e.g. stop a run that was cancelled)."""
    api_key: str | None = None
    """The worker's API key (a ``worker`` key of its namespace)."""
    tls: ssl.SSLContext | None = None
    """For a ``https://`` server (None: the system's trusted authorities)."""
    registered: Registered = attrs.Factory(Registered)
    """Filled in at each registration."""
    first_connect_seconds: float | None = None
    """Give up if the first connection does not succeed within this; None: wait until the
    server is up, however long (it may start after the worker)."""

    async def run(  # noqa: ASYNC128 (`_session` reports started, once registered)
        self,
        inbox: trio.MemoryReceiveChannel[Call[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect and register, then send calls until the mailbox closes.

        Until the server answers (it may start after the worker), and whenever a session
        is lost (it may be restarting), the link tries again with a jittered backoff,
        logging each attempt and why the last one failed; calls wait in the mailbox.

        A registration refused because another live worker holds the worker ID is tried
        again the same way (the ID is free once that worker is gone).

        Raises:
            aiki.UnavailableError: the first connection did not succeed within
                `first_connect_seconds` (if set).
            aiki.ConflictError: the worker ID was still held by a live worker after
                `first_connect_seconds`.
            aiki.UnauthenticatedError: the server refused the first connection's key (a
                refusal later is logged, and the link keeps trying).
        """
        ready: trio.TaskStatus[None] | None = task_status
        limit = self.first_connect_seconds
        deadline = trio.current_time() + (limit if limit is not None else math.inf)
        delays = RECONNECT.delays(random.Random())
        attempt = 0
        while True:
            attempt += 1
            url = self.servers.current
            try:
                lost = await self._session(url, inbox, ready)
            except WebSocketError as exc:
                refused = connect_error(url, exc)
                if ready is not None and (
                    not isinstance(refused, UnavailableError) or trio.current_time() > deadline
                ):
                    raise refused from exc  # a bad key is not fixed by waiting
                if not isinstance(refused, UnavailableError):
                    logger.error("the server refused this worker's session: %s", refused)
                lost = str(refused)
            except UnavailableError as exc:
                if ready is not None and trio.current_time() > deadline:
                    raise UnavailableError(
                        f"cannot reach the Aiki server at {self.servers}: {exc}"
                    ) from exc
                lost = str(exc)
            except ConflictError as exc:
                # The worker ID is still held by a live worker (this process's previous
                # run, say, not yet timed out): it is free once that one is gone.
                if ready is not None and trio.current_time() > deadline:
                    raise
                lost = str(exc)
            else:
                if lost is None:
                    return  # the mailbox closed: shutdown
                # The session had been up: reconnect promptly (and for as long as it takes).
                ready, delays, attempt = None, RECONNECT.delays(random.Random()), 0
            self.servers.failed(url)
            delay = next(delays)
            if ready is not None:
                logger.warning("the Aiki server at %s is not reachable yet (%s); attempt %d, "
                               "next in %.1f s", url, lost, attempt, delay)  # fmt: skip
            else:
                logger.warning("session with %s lost (%s); connecting to %s in %.1f s", url,
                               lost, self.servers.current, delay)  # fmt: skip
            await trio.sleep(delay)

    async def _session(
        self,
        url: str,
        inbox: trio.MemoryReceiveChannel[Call[Any]],
        task_status: trio.TaskStatus[None] | None,
    ) -> str | None:
        """One session: register, then send calls; return None once the mailbox closed,
        or why the connection ended after it was registered.

        Raises:
            transport.WebSocketError: the connection could not be opened.
            aiki.UnavailableError: it ended before the worker was registered.
        """
        async with open_websocket(
            session_url(url),
            max_message_bytes=MAX_MESSAGE_BYTES,
            headers=auth_headers(self.api_key),
            ssl_context=self.tls,
        ) as websocket:
            connection = SessionConnection(websocket, url, on_push=self.on_push)
            registered = shutdown = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, connection, nursery.cancel_scope)
                with trio.fail_after(REGISTER_SECONDS):
                    reply = await connection.call(self.registration)
                self.registered.namespace = reply.namespace
                self.registered.stream_shards = reply.stream_shards
                self.registered.granted(reply.redis)
                registered = True
                worker_id = self.registration.worker_id
                if task_status is not None:
                    logger.info("worker %s connected to %s", worker_id, url,
                                extra={"worker_id": worker_id})  # fmt: skip
                else:  # (after a loss, which was logged as a warning: so is its end)
                    logger.warning("worker %s reconnected to %s", worker_id, url,
                                   extra={"worker_id": worker_id})  # fmt: skip
                if task_status is not None:
                    task_status.started()
                async for message in inbox:
                    await connection.send_request(message.request, message.deliver)
                shutdown = True
                await self._say_goodbye(connection)
                nursery.cancel_scope.cancel()
        if shutdown:
            return None
        # The reader cancelled the session: the connection ended.
        assert connection.ended is not None
        if not registered:
            raise connection.ended
        return str(connection.ended)

    async def _say_goodbye(self, connection: SessionConnection) -> None:
        """The worker stops: tell the server (best effort; if it cannot be told, the
        heartbeat monitor finds out after the claim timeout)."""
        worker_id = self.registration.worker_id
        with trio.move_on_after(GOODBYE_SECONDS), contextlib.suppress(AikiError):
            await connection.call(DeregisterWorker(worker_id=worker_id))

    @staticmethod
    async def _read(connection: SessionConnection, session: trio.CancelScope) -> None:
        await connection.read()
        session.cancel()  # the connection ended: stop sending on it
