"""Live run updates for clients: `Watch`, an async iterator of `RunUpdate` pushes.

Under trio the subscription rides the client's WebSocket session; under asyncio it has a
WebSocket of its own (the ``websockets`` library). Either way the server pushes: nothing
polls. When the connection drops, the watch connects again and resumes where it was: a
watch of given runs asks the server to replay each run's changes after the last revision
it saw (so a terminal update is never missed, nor any delivered twice); a broader watch
cannot be replayed and yields a `Resync` marker instead.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import attrs

from actors import Backoff
from transport import WebSocketError
from transport.websocket import open_websocket

from ..errors import AikiError, UnavailableError
from ..protocol import (
    MAX_MESSAGE_BYTES,
    TERMINAL,
    RunInfo,
    RunUpdate,
    Subscribe,
    Subscribed,
    TaskProgress,
    session_url,
)
from ._connection import PushQueue, SessionConnection, connect_error
from ._session import ClientSession

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from types import TracebackType

    from ..protocol import Published
    from ._servers import Servers

logger = logging.getLogger(__name__)

RECONNECT: Final = Backoff(initial_seconds=0.05, max_seconds=2.0)
"""How long a watch waits before each attempt to connect again."""


@attrs.frozen
class Resync:
    """Updates may have been missed (the subscriber fell behind, or the connection
    dropped): re-read whatever state you keep before relying on later updates."""


class _Feed(Protocol):
    """One subscription on one connection."""

    subscribed: Subscribed

    async def receive(self) -> Published:
        """The next push frame. Raises `aiki.UnavailableError` when the connection drops."""
        ...

    async def aclose(self) -> None:
        """End the subscription (best effort)."""
        ...


@attrs.define
class _SessionFeed:
    """A subscription on the client's trio WebSocket session (its reader task reads)."""

    session: ClientSession
    subscribed: Subscribed
    queue: PushQueue
    connection: SessionConnection

    @classmethod
    async def open(cls, session: ClientSession, request: Subscribe) -> _SessionFeed:
        subscribed, queue, connection = await session.subscribe(request)
        return cls(session, subscribed, queue, connection)

    async def receive(self) -> Published:
        return await self.queue.get()

    async def aclose(self) -> None:
        await self.session.unsubscribe(self.subscribed.subscription, self.connection)


@attrs.define
class _SocketFeed:
    """A subscription on a WebSocket of its own (asyncio), read as the watch iterates."""

    stack: contextlib.AsyncExitStack
    connection: SessionConnection
    subscribed: Subscribed
    queue: PushQueue

    @classmethod
    async def open(
        cls, servers: Servers, request: Subscribe, auth: Mapping[str, str],
        tls: ssl.SSLContext | None,
    ) -> _SocketFeed:  # fmt: skip
        return await servers.first_reachable(lambda url: cls._open_on(url, request, auth, tls))

    @classmethod
    async def _open_on(
        cls, url: str, request: Subscribe, auth: Mapping[str, str], tls: ssl.SSLContext | None
    ) -> _SocketFeed:
        stack = contextlib.AsyncExitStack()
        try:
            websocket = await stack.enter_async_context(
                open_websocket(
                    session_url(url),
                    max_message_bytes=MAX_MESSAGE_BYTES,
                    headers=dict(auth),
                    ssl_context=tls,
                )
            )
            connection = SessionConnection(websocket, url)
            subscribed, queue = await connection.subscribe(request, pulling=True)
        except WebSocketError as exc:
            await stack.aclose()
            raise connect_error(url, exc) from exc
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, connection, subscribed, queue)

    async def receive(self) -> Published:
        return await self.connection.next_publication(self.queue)

    async def aclose(self) -> None:
        await self.stack.aclose()


BEGAN: Final = "watch began"
"""The reason of the first update of a watch of given runs: each run's state then."""


def _as_it_is(run: RunInfo) -> RunUpdate:
    """The update that tells a new watcher the run's state when its watch began."""
    ended = run.status in TERMINAL
    return RunUpdate(
        run_id=run.id, workflow=run.workflow, version=run.version, status=run.status,
        revision=run.revision, previous=None, reason=BEGAN, at=run.updated_at,
        output=run.output, error=run.error, run=run if ended else None,
        namespace=run.namespace,
    )  # fmt: skip


class Watch:
    """Live updates of runs, as an async iterator (see `aiki.Client.watch`).

    Use it in ``async with`` to end the subscription as soon as you are done::

        async with client.watch(handle.run_id) as updates:
            async for update in updates:
                print(update.status, update.reason)

    A watch of given runs yields first each run's state when the watch began (an update
    with ``reason="watch began"`` and ``previous=None``), then every later change.

    Attributes:
        runs: for a watch of given runs, each run as it was when the watch began.
    """

    def __init__(
        self,
        servers: Servers,
        session: ClientSession | None,
        request: Subscribe,
        requests: collections.Counter[str],
        auth: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._requests = requests
        self._servers = servers
        self._auth: Mapping[str, str] = auth or {}
        """The headers that present the caller (`auth_headers`)."""
        self._tls = tls
        self._session = session
        self._request = request
        self._feed: _Feed | None = None
        self._ready: collections.deque[RunUpdate | Resync | TaskProgress] = collections.deque()
        self._last: dict[str, int] = {}
        self._closed = False
        self.runs: dict[str, RunInfo] = {}

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Watch:
        return self

    async def start(self) -> None:
        """Subscribe now (otherwise the first iteration does).

        Raises:
            aiki.RunNotFoundError: a watched run does not exist.
            aiki.UnavailableError: the server could not be reached.
        """
        if self._feed is None:
            self._feed = await self._open(self._request)
            request = self._request
            for run in self._feed.subscribed.runs:
                self.runs[run.id] = run
                if request.after_revision is None:
                    self._last[run.id] = run.revision
                    if not request.statuses or run.status in request.statuses:
                        self._ready.append(_as_it_is(run))

    async def _open(self, request: Subscribe) -> _Feed:
        if self._session is not None:
            return await _SessionFeed.open(self._session, request)
        self._requests["subscribe"] += 1  # (its unsubscribe is the socket's close)
        return await _SocketFeed.open(self._servers, request, self._auth, self._tls)

    async def __anext__(self) -> RunUpdate | Resync | TaskProgress:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        while not self._ready:
            assert self._feed is not None
            try:
                self._absorb(await self._feed.receive())
                continue
            except UnavailableError as exc:
                logger.info("update stream dropped (%s); resuming", exc)
            with contextlib.suppress(AikiError):
                await self._feed.aclose()
            delays = RECONNECT.delays(random.Random())
            while True:
                await anyio.sleep(next(delays))
                try:
                    self._feed = await self._open(self._resume())
                    break
                except UnavailableError:
                    continue
            if not self._request.run_ids:
                self._ready.append(Resync())  # what happened meanwhile cannot be replayed
        return self._ready.popleft()

    def _resume(self) -> Subscribe:
        """The subscription again; for given runs, replaying what came after the last
        revision seen (duplicates are dropped in `_absorb`)."""
        if not self._request.run_ids:
            return self._request
        seen = [self._last.get(run_id, 0) for run_id in self._request.run_ids]
        return attrs.evolve(self._request, after_revision=min(seen))

    def _absorb(self, frame: Published) -> None:
        self._ready.extend(frame.progress)
        if frame.resync:
            if self._request.run_ids:
                # Fell behind: subscribe again, replaying from the last revision seen.
                raise UnavailableError("fell behind; replaying")
            self._ready.append(Resync())
        for update in frame.updates:
            if self._request.run_ids:  # replays may overlap: each revision once
                if update.revision <= self._last.get(update.run_id, 0):
                    continue
                self._last[update.run_id] = update.revision
            self._ready.append(update)

    async def aclose(self) -> None:
        """End the subscription. Iteration then stops."""
        self._closed = True
        if self._feed is not None:
            feed, self._feed = self._feed, None
            with contextlib.suppress(AikiError):
                await feed.aclose()
