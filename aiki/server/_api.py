"""The server's API on one port: HTTP JSON operations, a WebSocket session, health.

An ASGI app (Starlette) served by hypercorn's trio worker. Every operation of
`aiki._operation_table.OPERATIONS` is reachable as ``POST /api/v1/<operation>`` and over the
multiplexed WebSocket session at ``/api/v1/session``, where requests are handled
concurrently and replies carry the request's ``id``.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from transport import CodecError, StorageError

from .._operation_table import OPERATIONS, SESSION_ONLY
from .._protocol import ERROR_BODY, PUSH, ErrorBody, RegisterWorker, StopRun
from .._protocol_live import (
    RUN_UPDATE,
    TASK_PROGRESS,
    RunUpdate,
    Subscribe,
    Subscribed,
    TaskProgress,
    Unsubscribe,
    Unsubscribed,
)
from ..errors import (
    AikiError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ReferenceConflictError,
    ValidationError,
)
from . import _store_updates
from ._broadcaster import Broadcaster, Subscriber
from ._control import ControlOperations
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._operations import Operations

logger = logging.getLogger(__name__)

SESSION_IN_FLIGHT: Final = 256
"""Requests one WebSocket session may have in progress; more wait (backpressure)."""
SESSION_SUBSCRIPTIONS: Final = 64
"""Subscriptions one WebSocket session may hold at once."""
SUBSCRIBE_RUNS: Final = 1000
"""Run IDs one subscription may name."""

HealthCheck = Callable[[], Awaitable[None]]

DASHBOARD: Final = Path(str(importlib.resources.files(__package__) / "dashboard"))
"""The dashboard's static files (plain HTML, CSS and JavaScript: no build step)."""


def error_body(exc: AikiError) -> bytes:
    """The JSON error object for ``exc``."""
    body = ErrorBody(
        code=exc.code,
        message=str(exc),
        errors=exc.errors if isinstance(exc, ValidationError) else (),
        run_id=exc.run_id if isinstance(exc, ReferenceConflictError) else None,
    )
    return orjson.dumps({"error": ERROR_BODY.unstructure(body)})


class _Internal(AikiError):
    """An unexpected server failure (the details go to the log)."""


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    return bytes(body)


async def _dispatch(
    ops: Operations, name: str, raw: bytes | str | dict[str, object], *, worker_id: str | None
) -> tuple[bytes, object]:
    """Decode and carry out one request: ``raw`` JSON text, or a session frame's parsed body."""
    operation = OPERATIONS.get(name)
    if operation is None:
        raise NotFoundError(f"unknown operation {name!r}; known: {', '.join(sorted(OPERATIONS))}")
    if name in SESSION_ONLY:
        raise BadRequestError(f"{name} works only over the WebSocket session at /api/v1/session")
    try:
        if isinstance(raw, dict):
            request = operation.request.structure(raw)
        else:
            request = operation.request.decode(raw)
    except CodecError as exc:
        raise BadRequestError(f"invalid {name} request: {exc}", errors=exc.errors) from None
    reply = await ops.handle(request, worker_id=worker_id)
    return operation.reply.encode(reply), request


async def _guarded(call: Callable[[], Awaitable[bytes]]) -> tuple[int, bytes]:
    """Run ``call``; turn errors into (status, error body). Cancellation passes through."""
    try:
        return 200, await call()
    except AikiError as exc:
        return exc.http_status, error_body(exc)
    except Exception:
        logger.exception("unexpected error while serving a request")
        return 500, error_body(_Internal("internal server error; see the server log"))


@attrs.define
class _Session:
    """One WebSocket session: concurrent requests, serialized replies, server pushes."""

    ops: ControlOperations
    websocket: WebSocket
    max_bytes: int
    broadcaster: Broadcaster | None
    worker_id: str | None = None
    _send_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _slots: trio.Semaphore = attrs.field(factory=lambda: trio.Semaphore(SESSION_IN_FLIGHT))
    _nursery: trio.Nursery | None = None
    _forwarders: dict[str, trio.CancelScope] = attrs.Factory(dict)

    async def serve(self) -> None:
        await self.websocket.accept()
        sessions = self.ops.metrics.websocket_sessions
        sessions.inc()
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
            sessions.dec()
            if self.worker_id is not None:
                self.ops.sessions.detach(self.worker_id, self.push)
            for subscription in self._forwarders:
                if self.broadcaster is not None:
                    self.broadcaster.remove(subscription)

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self.websocket.send_text(frame.decode())

    async def push(self, message: StopRun) -> None:
        """Send a server push (``{"push": {...}}``) to the worker."""
        await self._send(b'{"push":' + PUSH.encode(message) + b"}")

    async def _subscribe(self, body: dict[str, object]) -> tuple[bytes, Subscriber]:
        if self.broadcaster is None:
            raise BadRequestError("this server does not publish live updates")
        try:
            request = typing.cast("Subscribe", OPERATIONS["subscribe"].request.structure(body))
        except CodecError as exc:
            raise BadRequestError(f"invalid subscribe request: {exc}", errors=exc.errors) from None
        if request.after_revision is not None and (
            not request.run_ids or request.after_revision < 0
        ):
            raise BadRequestError("after_revision (>= 0) needs run_ids",
                                  errors=("@ $.after_revision",))  # fmt: skip
        if request.version is not None and request.workflow is None:
            raise BadRequestError("version needs workflow", errors=("@ $.version",))
        if len(self._forwarders) >= SESSION_SUBSCRIPTIONS:
            raise BadRequestError(f"at most {SESSION_SUBSCRIPTIONS} subscriptions per session")
        if len(request.run_ids) > SUBSCRIBE_RUNS:
            raise BadRequestError(f"at most {SUBSCRIBE_RUNS} run_ids per subscription")
        subscriber = await self.broadcaster.add(request)
        try:
            # Read after registering: every change from here on is pushed (no gap).
            found = await self.ops.transact(lambda tx: _store_updates.runs(tx, request.run_ids))
            missing = [run_id for run_id in request.run_ids if run_id not in found]
            if missing:
                raise NotFoundError(f"no run {', '.join(missing[:5])}")
            if request.after_revision is not None:
                after = request.after_revision
                past = await self.ops.transact(
                    lambda tx: _store_updates.history(tx, request.run_ids, after)
                )
                subscriber.replay([update for update in past if subscriber.matches(update)])
            else:
                subscriber.skip_through({run.id: run.revision for run in found.values()})
        except BaseException:
            self.broadcaster.remove(subscriber.id)
            raise
        reply = Subscribed(subscription=subscriber.id,
                           runs=tuple(found[run_id] for run_id in request.run_ids))  # fmt: skip
        return OPERATIONS["subscribe"].reply.encode(reply), subscriber

    def _unsubscribe(self, body: dict[str, object]) -> bytes:
        try:
            request = typing.cast("Unsubscribe", OPERATIONS["unsubscribe"].request.structure(body))
        except CodecError as exc:
            raise BadRequestError(
                f"invalid unsubscribe request: {exc}", errors=exc.errors
            ) from None
        scope = self._forwarders.pop(request.subscription, None)
        if scope is not None:
            scope.cancel()
        if self.broadcaster is not None:
            self.broadcaster.remove(request.subscription)
        reply = Unsubscribed(subscription=request.subscription)
        return OPERATIONS["unsubscribe"].reply.encode(reply)

    async def _forward(self, subscriber: Subscriber, scope: trio.CancelScope) -> None:
        """Push a subscription's updates (batched per frame) until it is cancelled."""
        prefix = b'{"subscription":' + orjson.dumps(subscriber.id)
        with scope:
            while True:
                updates, resync = await subscriber.take()
                if resync:
                    await self._send(prefix + b',"resync":true}')
                changes = [RUN_UPDATE.encode(u) for u in updates if isinstance(u, RunUpdate)]
                progress = [TASK_PROGRESS.encode(p) for p in updates if isinstance(p, TaskProgress)]
                if changes:
                    await self._send(prefix + b',"updates":[' + b",".join(changes) + b"]}")
                if progress:
                    await self._send(prefix + b',"progress":[' + b",".join(progress) + b"]}")

    async def _answer(self, text: str) -> None:
        try:
            frame_id = b"null"
            subscribed: Subscriber | None = None

            async def call() -> bytes:
                nonlocal frame_id, subscribed
                if len(text) > self.max_bytes:
                    raise PayloadTooLargeError(f"frame exceeds {self.max_bytes} bytes")
                try:
                    frame = orjson.loads(text)
                    frame_id = orjson.dumps(frame["id"])
                    name, body = frame["op"], frame["body"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    expected = '{"id": ..., "op": ..., "body": {...}}'
                    raise BadRequestError(f"malformed frame ({exc}); expected {expected}") from None
                if not isinstance(body, dict):
                    raise BadRequestError("the frame's body must be a JSON object")
                if name == "subscribe":
                    encoded, subscribed = await self._subscribe(body)
                    return encoded
                if name == "unsubscribe":
                    return self._unsubscribe(body)
                encoded, request = await _dispatch(self.ops, name, body, worker_id=self.worker_id)
                if isinstance(request, RegisterWorker):
                    self.worker_id = request.worker_id
                    self.ops.sessions.attach(request.worker_id, self.push)
                return encoded

            status, payload = await _guarded(call)
            if status == 200:
                reply = b'{"id":' + frame_id + b',"ok":' + payload + b"}"
            else:  # payload is {"error": {...}}: splice the id in front
                reply = b'{"id":' + frame_id + b"," + payload[1:]
            try:
                await self._send(reply)
            finally:
                if subscribed is not None:  # its pushes go out only after the reply
                    scope = self._forwarders[subscribed.id] = trio.CancelScope()
                    assert self._nursery is not None
                    self._nursery.start_soon(self._forward, subscribed, scope)
        finally:
            self._slots.release()


def build_app(
    ops: ControlOperations,
    *,
    max_body_bytes: int,
    health_checks: tuple[HealthCheck, ...] = (),
    broadcaster: Broadcaster | None = None,
    listening: Listening | None = None,
) -> Starlette:
    """The ASGI application serving ``ops``."""

    async def operation(request: Request) -> Response:
        name = request.path_params["operation"]

        async def call() -> bytes:
            raw = await _read_limited(request, max_body_bytes)
            return (await _dispatch(ops, name, raw, worker_id=None))[0]

        status, body = await _guarded(call)
        return Response(body, status_code=status, media_type="application/json")

    async def session(websocket: WebSocket) -> None:
        await _Session(ops, websocket, max_body_bytes, broadcaster).serve()

    async def healthz(request: Request) -> Response:
        problems = []
        for check in health_checks:
            try:
                with trio.fail_after(2):
                    await check()
            except Exception as exc:
                problems.append(f"{check.__name__}: {exc}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if listening is not None and not listening.ready:
            return JSONResponse({"status": "not ready", "problems": ["starting or stopping"]},
                                status_code=503)  # fmt: skip
        return await healthz(request)

    async def metrics(request: Request) -> Response:
        try:
            with trio.fail_after(5):
                body = await ops.metrics.render(ops.store)
        except (StorageError, trio.TooSlowError) as exc:
            return Response(f"# storage unavailable: {exc}\n", status_code=503)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    async def dashboard(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html", media_type="text/html")

    return Starlette(
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard"),
            Route("/api/v1/{operation}", operation, methods=["POST"]),
            WebSocketRoute("/api/v1/session", session),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


@attrs.define
class Listening:
    """Where the API listens, once it does (filled in by the `Api` actor)."""

    urls: list[str] = attrs.Factory(list)
    ready: bool = False
    """The whole server tree runs (False again once it is shutting down)."""


@attrs.define
class Api:
    """Actor: serves the app with hypercorn until its mailbox closes, then drains connections."""

    app: Starlette
    host: str
    port: int
    listening: Listening
    graceful_timeout_seconds: float = 5.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, report ready, serve; stop accepting when the mailbox closes."""
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("aiki.server.http")
        config.graceful_timeout = self.graceful_timeout_seconds
        # Longer than any client keeps an idle connection (ours: 15 s), so the server never
        # closes a connection a client is about to reuse (a POST cannot be retried blindly).
        config.keep_alive_timeout = 75
        config.keep_alive_max_requests = 1_000_000
        config.websocket_ping_interval = 20
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(serve, self.app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
            )
            self.listening.urls[:] = list(urls)
            logger.info("API listening on %s", ", ".join(urls))
            task_status.started()
            async for _ in inbox:
                pass
            stop.set()
