"""The server's API on one port: HTTP JSON operations, a WebSocket session, health.

An ASGI app (Starlette) served by hypercorn's trio worker. Every operation of
`aiki._protocol.OPERATIONS` is reachable as ``POST /api/v1/<operation>`` and over the
multiplexed WebSocket session at ``/api/v1/session``, where requests are handled
concurrently and replies carry the request's ``id``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import attrs
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from transport import CodecError

from .._protocol import ERROR_BODY, OPERATIONS, PUSH, ErrorBody, RegisterWorker, StopRun
from ..errors import (
    AikiError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ReferenceConflictError,
    ValidationError,
)
from ._control import ControlOperations

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._operations import Operations

logger = logging.getLogger(__name__)

SESSION_IN_FLIGHT: Final = 256
"""Requests one WebSocket session may have in progress; more wait (backpressure)."""

HealthCheck = Callable[[], Awaitable[None]]


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
    worker_id: str | None = None
    _send_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _slots: trio.Semaphore = attrs.field(factory=lambda: trio.Semaphore(SESSION_IN_FLIGHT))

    async def serve(self) -> None:
        await self.websocket.accept()
        try:
            async with trio.open_nursery() as nursery:
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
            if self.worker_id is not None:
                self.ops.sessions.detach(self.worker_id, self.push)

    async def push(self, message: StopRun) -> None:
        """Send a server push (``{"push": {...}}``) to the worker."""
        frame = b'{"push":' + PUSH.encode(message) + b"}"
        async with self._send_lock:
            await self.websocket.send_text(frame.decode())

    async def _answer(self, text: str) -> None:
        try:
            frame_id = b"null"

            async def call() -> bytes:
                nonlocal frame_id
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
            async with self._send_lock:
                await self.websocket.send_text(reply.decode())
        finally:
            self._slots.release()


def build_app(
    ops: ControlOperations,
    *,
    max_body_bytes: int,
    health_checks: tuple[HealthCheck, ...] = (),
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
        await _Session(ops, websocket, max_body_bytes).serve()

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

    return Starlette(
        routes=[
            Route("/api/v1/{operation}", operation, methods=["POST"]),
            WebSocketRoute("/api/v1/session", session),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


@attrs.define
class Listening:
    """Where the API listens, once it does (filled in by the `Api` actor)."""

    urls: list[str] = attrs.Factory(list)


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
