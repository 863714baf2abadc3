"""An ASGI server on trio that no client can bring down: hypercorn, one connection at a time.

hypercorn's own trio worker runs every connection in one server-wide nursery, so an
exception that escapes one connection's protocol code ends them all and the listener
with them (hypercorn issue #225: a byte pipelined after a WebSocket upgrade raises
wsproto's ``LocalProtocolError``; a ping racing a close raises ``BusyResourceError``).
`serve_asgi` accepts connections itself and runs each of hypercorn's per-connection
servers (``TCPServer``) in a guard: whatever one connection raises is logged and closes
that connection, and nothing else. It also caps open connections, answering the one
over the cap with ``503`` and ``Retry-After`` before file descriptors run out, and
bounds WebSocket messages and request heads as they arrive, not after buffering.

Connections the application has not admitted (`ADMIT`: their request proved a key) get
a bounded share of the cap, per peer address too, and `ServerLimits.head_seconds` to
send a request head: one more closes the oldest idle one (`transport._admission`), so
keyless connections, however many, never lock out a client that holds a key.

With an ``ssl_context``, every connection is TLS (HTTPS and WSS on the one port): the
handshake must complete within `TLS_HANDSHAKE_SECONDS`, and only HTTP/1.1 is offered.

A request answered before its body was read (a refusal: 401, 413) has the rest of its
body read and dropped (at most `DRAIN_BYTES`, for `DRAIN_SECONDS`), then the connection
carries on or, past either bound, is closed. hypercorn would otherwise stall such a
connection: the unread body fills its queue to the application, and the end of the
response waits on that queue.

Relies on hypercorn's ``TCPServer``, ``WorkerContext`` and ``wrap_app`` (0.17 to 0.18).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import resource
from typing import TYPE_CHECKING, Final

import attrs
import h11
import trio
import wsproto.utilities
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from ._admission import Admission
from .tls import peer_certificate

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Iterator

    from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Framework, Scope
    from hypercorn.typing import ASGIReceiveCallable as Receive
    from hypercorn.typing import ASGISendCallable as Send

logger = logging.getLogger(__name__)

PEER_CERTIFICATE: Final = "transport.peer_certificate"
"""Where a connection's ASGI scopes hold the certificate its TLS peer presented and the
handshake verified (`transport.tls.peer_certificate`; None: none)."""
ADMIT: Final = "transport.admit"
"""Where a connection's ASGI scopes hold its admission: a call without arguments that the
application makes once the request proved who it is (the connection is then no longer
closed to make room, nor after `ServerLimits.head_seconds` idle)."""
FD_RESERVE: Final = 128
"""File descriptors kept free of client connections (see `connection_cap`)."""
CLOSE_SECONDS: Final = 1.0
TLS_HANDSHAKE_SECONDS: Final = 10.0
DRAIN_BYTES: Final = 16 * 1024 * 1024
DRAIN_SECONDS: Final = 5.0
"""How much of an unread request body is read and dropped after the answer, and for
how long, before the connection is closed instead (the peer then sees a reset)."""
"""How long closing a connection that failed, or one refused over the cap, may take."""

BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 75\r\n\r\n"
    b'{"error":{"code":"unavailable","message":"too many connections, retry later"}}'
)


@attrs.frozen(kw_only=True)
class ServerLimits:
    """What one server accepts from its peers.

    Args:
        max_connections: open connections at once; one more closes the oldest idle
            connection not admitted, or is answered ``503`` and closed if every one is.
        max_unadmitted: connections not admitted (`ADMIT`) at once; one more closes the
            oldest idle one of them.
        max_unadmitted_per_address: the same, from one peer address (an IPv6 /64).
        head_seconds: how long a connection not admitted may take to send a request head
            (from its start, or from the end of its previous request) before it is closed.
        max_message_bytes: the largest WebSocket message (larger closes it with 1009).
        max_head_bytes: the largest request line and headers.
        keep_alive_seconds: how long an idle HTTP connection is kept.
        ping_seconds: how often a WebSocket is pinged (a dead peer is noticed).
        graceful_seconds: on shutdown, how long open connections may take to finish.
    """

    max_connections: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_unadmitted: int = attrs.field(default=250, validator=attrs.validators.ge(1))
    max_unadmitted_per_address: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    head_seconds: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    max_message_bytes: int = attrs.field(default=2 * 1024 * 1024, validator=attrs.validators.ge(1))
    max_head_bytes: int = 16 * 1024
    keep_alive_seconds: float = 75.0
    ping_seconds: float | None = 20.0
    graceful_seconds: float = 5.0


@attrs.define
class ServerStatistics:
    """Counters of one `serve_asgi`."""

    open: int = 0
    unadmitted: int = 0
    """Open connections not admitted yet (`ADMIT`)."""
    refused: int = 0
    """Connections refused over the cap."""
    made_room: int = 0
    """Connections not admitted, closed to make room for a newer one."""
    head_timeouts: int = 0
    """Connections not admitted, closed after `ServerLimits.head_seconds` without a head."""
    tls_refused: int = 0
    """Connections whose TLS handshake failed or took too long (a client certificate
    missing or not trusted, under mutual TLS, among the reasons)."""
    failed: int = 0
    """Connections closed because their protocol code raised."""


LISTEN_BACKLOG: Final = 1024
"""Connections the kernel queues for a listener before they are accepted."""


def reusable_socket(family: int) -> trio.socket.SocketType:
    """A TCP socket whose port other processes may listen on too (``SO_REUSEPORT``)."""
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    if family == trio.socket.AF_INET6:
        sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
    return sock


async def _shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listeners on ``host``:``port`` (every address it resolves to), port shared."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners = []
    try:
        for family, _, _, _, address in addresses:
            sock = reusable_socket(family)
            try:
                await sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
            except OSError:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except OSError:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


async def serve_asgi(
    app: Framework,
    *,
    host: str,
    port: int,
    limits: ServerLimits,
    shutdown_trigger: Callable[[], Awaitable[object]],
    statistics: ServerStatistics | None = None,
    error_log: logging.Logger | None = None,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host``:``port`` until ``shutdown_trigger`` returns; report the URLs
    listened on through ``task_status`` (``https://`` with an ``ssl_context``: see
    `transport.tls.server_tls`).

    With ``reuse_port``, the port may be shared with other processes that listen on it the
    same way (``SO_REUSEPORT``: the kernel spreads new connections over them).

    On shutdown, new connections are no longer accepted and open ones get
    ``limits.graceful_seconds`` to finish before they are cancelled.

    Raises:
        OSError: the address cannot be bound.
    """
    stats = statistics if statistics is not None else ServerStatistics()
    cap = connection_cap(limits.max_connections)
    admission: Admission[_Seat] = Admission(
        cap, min(cap, limits.max_unadmitted), min(cap, limits.max_unadmitted_per_address)
    )
    config = _config(limits, error_log)
    context = WorkerContext(None)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    listeners = (
        await _shared_listeners(host, port)
        if reuse_port
        else await trio.open_tcp_listeners(port, host=host)
    )
    urls = []
    for listener in listeners:
        address, bound = listener.socket.getsockname()[:2]
        scheme = "http" if ssl_context is None else "https"
        urls.append(f"{scheme}://{f'[{address}]' if ':' in address else address}:{bound}")

    failures = _FailureLog()

    async def connection(plain: trio.SocketStream) -> None:
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = plain
        if ssl_context is not None:
            stream = trio.SSLStream(plain, ssl_context, server_side=True, https_compatible=True)
        seat = _Seat(admission, limits.head_seconds, stats)
        arrival = admission.arrive(seat, _peer_host(plain))
        for other in arrival.close:
            stats.made_room += 1
            other.abandon.cancel()
        stats.unadmitted = admission.waiting
        if arrival.refused:
            stats.refused += 1
            await _refuse(stream)
            return
        stats.open += 1
        try:
            # Closing the connection from inside (`_Connection.abandon`) cancels this scope,
            # not hypercorn's task group: its exit drops the flag that says it caught the
            # cancellation, which would then end the listener (hypercorn 0.17).
            with seat.abandon:
                if isinstance(stream, trio.SSLStream) and not await _handshake(stream):
                    stats.tls_refused += 1
                    await trio.aclose_forcefully(plain)
                    return
                await _Connection(wrapped, config, context, {}, stream, seat).run()
            if seat.abandon.cancelled_caught and seat.timed_out():
                stats.head_timeouts += 1
        except* Exception as group:
            # One connection's failure (a protocol error, a race in its tasks): this
            # connection ends, the server carries on.
            stats.failed += 1
            failures.report(group)
            with trio.move_on_after(CLOSE_SECONDS, shield=True):
                await stream.aclose()
        finally:
            stats.open -= 1
            seat.leave()

    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                functools.partial(trio.serve_listeners, handler_nursery=connections),
                connection,
                listeners,
                name="accept connections",
            )
            task_status.started(urls)
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        await context.terminated.set()
        connections.cancel_scope.deadline = trio.current_time() + limits.graceful_seconds


async def _handshake(stream: trio.SSLStream[trio.SocketStream]) -> bool:
    """Complete the TLS handshake within `TLS_HANDSHAKE_SECONDS`; whether it did.

    Done here, before hypercorn (whose own is then done already), for a refusal's sake:
    OpenSSL writes the alert that says why (``certificate required``, ``unknown ca``) to
    its buffer, and trio's stream, broken, never sends it. It is sent here (within
    `CLOSE_SECONDS`), so the client learns why at its first read instead of seeing the
    connection just end. The caller closes the stream.
    """
    try:
        with trio.fail_after(TLS_HANDSHAKE_SECONDS):
            await stream.do_handshake()
    except trio.TooSlowError:
        return False
    except trio.BrokenResourceError:
        alert = stream._outgoing.read()  # (trio 0.2x: the SSL object's outgoing BIO)
        if alert:
            with (
                trio.move_on_after(CLOSE_SECONDS),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
            ):
                await stream.transport_stream.send_all(alert)
        return False
    return True


def _peer_host(stream: trio.SocketStream) -> str:
    """The peer's address (``""`` when it is gone already)."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return ""
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class _Seat:
    """One connection's place in the listener's `Admission`, and its way out: ``abandon``
    (cancelled to close it at once; its deadline is the head deadline while the
    connection is not admitted and has no request in progress)."""

    def __init__(
        self, admission: Admission[_Seat], head_seconds: float, stats: ServerStatistics
    ) -> None:
        self._admission = admission
        self._head_seconds = head_seconds
        self._stats = stats
        self.abandon = trio.CancelScope(deadline=trio.current_time() + head_seconds)

    def admit(self) -> None:
        """The connection's request proved who it is (`ADMIT`)."""
        self._admission.admit(self)
        self.abandon.deadline = math.inf
        self._counted()

    def busy(self, busy: bool) -> None:
        """A request is in progress (its head arrived), or none is any more."""
        if self._admission.is_waiting(self):
            self._admission.busy(self, busy)
            self.abandon.deadline = math.inf if busy else trio.current_time() + self._head_seconds

    def timed_out(self) -> bool:
        """Whether it was closed for want of a request head in time."""
        return (self._admission.is_waiting(self)
                and trio.current_time() >= self.abandon.deadline)  # fmt: skip

    def leave(self) -> None:
        """The connection is closed."""
        self._admission.leave(self)
        self._counted()

    def _counted(self) -> None:
        self._stats.unadmitted = self._admission.waiting


FAILURE_LOG_SECONDS: Final = 10.0
"""At most one warning about failed connections per this many seconds (a peer can fail
as many connections as it opens; each is counted in `ServerStatistics.failed`)."""


class _FailureLog:
    """Logs a failed connection as a warning, then at most one more per
    `FAILURE_LOG_SECONDS`, saying how many failed in between."""

    def __init__(self) -> None:
        self._logged_at = -FAILURE_LOG_SECONDS
        self._unlogged = 0

    def report(self, group: BaseExceptionGroup[Exception]) -> None:
        now = trio.current_time()
        if now - self._logged_at < FAILURE_LOG_SECONDS:
            self._unlogged += 1
            return
        trace = group if logger.isEnabledFor(logging.DEBUG) else None
        more = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
        logger.warning("connection failed and was closed: %r%s", group.exceptions[0], more,
                       exc_info=trace)  # fmt: skip
        self._logged_at, self._unlogged = now, 0


class _Connection(TCPServer):
    """hypercorn's connection server, ending soon after the peer has closed.

    hypercorn's own keeps the connection's tasks going after the peer's EOF: the idle
    timer (``keep_alive_seconds``) and a WebSocket's ping task (``ping_seconds``) hold
    the connection open, and its place under the cap, for nobody (and a server that
    stops waits for them). Once the peer is gone, the application gets `CLOSE_SECONDS`
    to finish, then the connection's tasks are cancelled: at once if no application call
    is running, or as soon as the last one returns.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: dict[str, object],
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        seat: _Seat,
    ) -> None:
        super().__init__(self._draining(app), config, context, state, stream)  # type: ignore[arg-type]
        self.seat = seat
        self.abandon = seat.abandon
        """Cancelled to close the connection at once (its tasks and stream)."""
        self._apps = 0
        """Application calls running (a request's or a WebSocket's)."""
        self._peer_gone = False

    def _draining(self, app: AppWrapper) -> AppWrapper:
        """``app``, reading the rest of a request body it did not read before the end of
        its answer (see the module docstring)."""

        async def drained(
            scope: Scope,
            receive: Receive,
            send: Send,
            sync_spawn: Callable[[], object],
            call_soon: Callable[[], object],
        ) -> None:
            scope[ADMIT] = self.seat.admit  # type: ignore[typeddict-unknown-key]
            scope[PEER_CERTIFICATE] = peer_certificate(self.stream)  # type: ignore[typeddict-unknown-key]
            if scope["type"] != "http":
                with self._running():
                    await app(scope, receive, send, sync_spawn, call_soon)
                return
            done = False

            async def tracked() -> ASGIReceiveEvent:
                nonlocal done
                message = await receive()
                done = done or message["type"] != "http.request" or not message.get("more_body")
                return message

            async def draining_send(message: ASGISendEvent) -> None:
                if done or message["type"] != "http.response.body" or message.get("more_body"):
                    await send(message)
                    return
                # The answer's last part, and the request's body not all read: send the
                # answer's bytes, read (and drop) the rest of the request, then end the
                # answer, or the connection if the rest does not come within the bounds.
                await send({**message, "more_body": True})
                left = DRAIN_BYTES
                with trio.move_on_after(DRAIN_SECONDS):
                    while not done and left > 0:
                        body = (await tracked()).get("body", b"")
                        left -= len(body) if isinstance(body, bytes) else 0
                if not done:
                    self.abandon.cancel()
                    await trio.lowlevel.checkpoint()
                await send({"type": "http.response.body", "body": b"", "more_body": False})

            with self._running():
                await app(scope, tracked, draining_send, sync_spawn, call_soon)

        return drained

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Count an application call while it runs: once the peer is gone, the last one to
        return ends the connection's tasks (nothing is left to finish)."""
        self._apps += 1
        self.seat.busy(True)
        try:
            yield
        finally:
            self._apps -= 1
            if self._apps == 0:
                self.seat.busy(False)
            if self._apps == 0 and self._peer_gone:
                self._end_tasks(0.0)

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()
        self._peer_gone = True
        self._end_tasks(CLOSE_SECONDS if self._apps else 0.0)

    def _end_tasks(self, after: float) -> None:
        """Cancel the connection's tasks (a WebSocket's ping task among them, asleep for
        ``ping_seconds``) ``after`` seconds from now, unless they are due sooner."""
        tasks = self._task_group._nursery  # hypercorn's TaskGroup wraps one nursery
        if tasks is not None:
            due = trio.current_time() + after
            tasks.cancel_scope.deadline = min(tasks.cancel_scope.deadline, due)


def connection_cap(wanted: int) -> int:
    """At most ``wanted`` connections, and fewer than this process may open files.

    The soft limit on open files is raised to the hard limit first (the default soft
    limit, often 1024, is below what a server needs); `FD_RESERVE` descriptors stay for
    everything else (database and Redis connections, threads, log files).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - FD_RESERVE))


async def _refuse(stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
    with (
        trio.move_on_after(CLOSE_SECONDS),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.send_all(BUSY)  # (over TLS: the handshake first, within the second)
    with trio.move_on_after(CLOSE_SECONDS, shield=True):
        await stream.aclose()


PEER_ERRORS: Final = (
    h11.LocalProtocolError, h11.RemoteProtocolError,
    wsproto.utilities.LocalProtocolError, wsproto.utilities.RemoteProtocolError,
    trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError,
)  # fmt: skip
"""What a connection's tasks raise when its peer broke the protocol or went away."""


class _PeerFailures(logging.Filter):
    """Drops hypercorn's "Error in ASGI Framework" records (with a traceback, at ERROR)
    caused by a peer that broke the protocol or went away: a peer could write one per
    connection, and the connection's end is logged once anyway, as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BaseExceptionGroup):
            return not all(isinstance(one, PEER_ERRORS) for one in error.exceptions)
        return not isinstance(error, PEER_ERRORS)


def _config(limits: ServerLimits, error_log: logging.Logger | None) -> Config:
    config = Config()
    config.ssl_handshake_timeout = TLS_HANDSHAKE_SECONDS
    config.accesslog = None
    errors = error_log if error_log is not None else logging.getLogger("hypercorn.error")
    if not any(isinstance(found, _PeerFailures) for found in errors.filters):
        errors.addFilter(_PeerFailures())
    config.errorlog = errors
    config.graceful_timeout = limits.graceful_seconds
    config.keep_alive_timeout = limits.keep_alive_seconds
    config.keep_alive_max_requests = 1_000_000
    config.websocket_ping_interval = limits.ping_seconds
    config.websocket_max_message_size = limits.max_message_bytes
    config.h11_max_incomplete_size = limits.max_head_bytes
    return config
