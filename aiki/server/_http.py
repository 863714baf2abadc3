"""The server's HTTP side on one port: JSON operations, the WebSocket session, the rest.

An ASGI app (Starlette) served by `transport.asgi.serve_asgi` (hypercorn's protocol code, one
contained connection at a time). Every operation of
`aiki.protocol.OPERATIONS` is reachable as ``POST /api/v1/<operation>`` (except the
session-only ones) and over the WebSocket session at ``/api/v1/session``
(`aiki.server._sessions`). Also: the dashboard at ``/`` (with its sign-in at
``/auth/sign-in`` and ``/auth/sign-out``), ``/metrics``, ``/healthz``, ``/readyz``.

Who may reach what is decided before this app (`aiki.server._auth.Authentication`); an
operation's roles are checked when it is dispatched.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import orjson
import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from transport import StorageError
from transport.asgi import ServerLimits, ServerStatistics, serve_asgi

from ..errors import (
    BadRequestError,
    ForbiddenError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnavailableError,
)
from ..protocol import MAX_TEXT, OPERATIONS, SESSION_PATH, decode_request, encode_error
from ._auth import (
    BAD_KEY,
    COOKIE,
    CREDENTIAL,
    CSRF_COOKIE,
    PRINCIPAL,
    SignIns,
    csrf_refusal,
    presented,
)
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._replies import guarded
from ._sessions import ServerSession
from .operations import HANDLERS, Caller, admit, dispatch
from .store import keys

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from .operations import Services


logger = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[None]]

SIGN_IN_BYTES: Final = 4096
COOKIE_SECONDS: Final = 12 * 3600
"""How long the dashboard stays signed in (the key itself may expire sooner)."""
DASHBOARD: Final = Path(str(importlib.resources.files(__package__) / "dashboard"))
"""The dashboard's static files (plain HTML, CSS and JavaScript: no build step)."""


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    except ClientDisconnect:  # (the answer goes nowhere: it only must not be a 500)
        raise BadRequestError("the client went away before sending the whole body") from None
    return bytes(body)


def _key_of(raw: bytes) -> str:
    """The key in a sign-in body (``{"key": "aiki_..."}``).

    Raises:
        aiki.BadRequestError: the body is not that.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequestError('sign in with a JSON body: {"key": "aiki_..."}') from None
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_TEXT:
        raise BadRequestError("sign in with an API key @ $.key", errors=("required @ $.key",))
    return key


def build_app(
    services: Services,
    *,
    max_body_bytes: int,
    health_checks: tuple[HealthCheck, ...] = (),
    listening: Listening | None = None,
    sign_ins: SignIns | None = None,
) -> Starlette:
    """The ASGI application serving the operations with ``services``."""

    async def operation(request: Request) -> Response:
        name = request.path_params["operation"]

        principal = request.scope[PRINCIPAL]

        async def call() -> bytes:
            known = OPERATIONS.named(name)
            if known is not None:
                admit(known, principal)  # (a caller that may not: its body is not read)
            raw = await _read_limited(request, max_body_bytes)
            declared, decoded = decode_request(OPERATIONS, name, raw)
            if declared.session_only:
                raise BadRequestError(
                    f"{name} works only over the WebSocket session at {SESSION_PATH}"
                )
            reply = await dispatch(HANDLERS, services, declared, decoded, Caller(principal))
            return declared.reply.encode(reply)

        status, body = await guarded(call)
        return Response(body, status_code=status, media_type="application/json")

    async def session(websocket: WebSocket) -> None:
        scope = websocket.scope
        await ServerSession(services, websocket, max_body_bytes, scope[PRINCIPAL],
                            scope.get(CREDENTIAL)).serve()  # fmt: skip

    async def sign_in(request: Request) -> Response:
        """Check a key and start a dashboard session with it: the session's token goes in
        an HttpOnly cookie (out of page script's reach; SameSite=Strict: never sent from
        another site), its CSRF token in one page script reads."""
        tokens: list[str] = []

        async def check() -> bytes:
            key = _key_of(await _read_limited(request, SIGN_IN_BYTES))
            authenticator = services.authenticator
            if authenticator is None or sign_ins is None:
                return b"{}"  # (no authentication: every caller is signed in already)
            principal = await authenticator.principal(key)
            if principal is None or principal.prefix is None:
                raise UnauthenticatedError(BAD_KEY)
            try:
                tokens.append(await sign_ins.start(principal.prefix))
            except StorageError as exc:
                raise UnavailableError(f"cannot sign in now: {exc}") from exc
            return b"{}"

        status, body = await guarded(check)
        response = Response(body, status_code=status, media_type="application/json")
        secure = request.url.scheme == "https"
        if tokens:
            response.set_cookie(COOKIE, tokens[0], max_age=COOKIE_SECONDS, path="/",
                                httponly=True, samesite="strict", secure=secure)  # fmt: skip
            response.set_cookie(CSRF_COOKIE, keys.csrf_token(tokens[0]), max_age=COOKIE_SECONDS,
                                path="/", samesite="strict", secure=secure)  # fmt: skip
        return response

    async def sign_out(request: Request) -> Response:
        """End the dashboard session the cookie names, on every server (its page must
        send its CSRF token), and drop the cookies."""
        proof = presented(request.scope)
        credential = None if proof is None else proof.credential
        if proof is not None and credential is not None and credential.signed_in:
            refusal = csrf_refusal(request.scope, proof)
            if refusal is not None:
                error = ForbiddenError(refusal)
                return Response(encode_error(error), status_code=error.http_status,
                                media_type="application/json")  # fmt: skip
            if sign_ins is not None:

                async def end() -> bytes:
                    try:
                        await sign_ins.end(credential)
                    except StorageError as exc:
                        raise UnavailableError(f"cannot sign out now: {exc}") from exc
                    return b"{}"

                status, body = await guarded(end)
                if status != 200:
                    return Response(body, status_code=status, media_type="application/json")
            if services.authenticator is not None:
                services.authenticator.forget_credential(credential)
        response = Response(b"{}", media_type="application/json")
        secure = request.url.scheme == "https"
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
        response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict", secure=secure)
        return response

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

    async def dashboard(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html", media_type="text/html")

    return Starlette(
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard"),
            Route("/api/v1/{operation}", operation, methods=["POST"]),
            Route("/auth/sign-in", sign_in, methods=["POST"]),
            Route("/auth/sign-out", sign_out, methods=["POST"]),
            WebSocketRoute(SESSION_PATH, session),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint(services), methods=["GET"]),
        ]
    )


def metrics_endpoint(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: the Prometheus text exposition (503 while storage is down); a key
    of one namespace reads that namespace's series only (the metrics listener, which
    takes no key, and keys of every namespace read all)."""

    async def metrics(request: Request) -> Response:
        principal = request.scope.get(PRINCIPAL)
        namespace = None if principal is None else principal.namespace
        try:
            with trio.fail_after(5):
                body = await services.render_metrics(namespace)
        except (StorageError, trio.TooSlowError) as exc:
            return Response(f"# storage unavailable: {exc}\n", status_code=503)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    return metrics


def build_metrics_app(services: Services) -> Starlette:
    """The metrics listener's application: ``/metrics`` alone, without a key (for a
    scraper on a network of its own: ``--metrics-host``)."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(services), methods=["GET"])])


@attrs.define
class Listening:
    """Where the API listens, once it does (filled in by the `Api` actor)."""

    urls: list[str] = attrs.Factory(list)
    ready: bool = False
    """The whole server tree runs (False again once it is shutting down)."""


@attrs.define
class Api:
    """Actor: serves the app until its mailbox closes, then drains connections.

    Each connection is contained (`transport.asgi.serve_asgi`): whatever it raises closes it
    and nothing else, and connections over ``limits.max_connections`` are refused.
    """

    app: Callable[..., Awaitable[None]]
    """The ASGI application."""
    host: str
    port: int
    listening: Listening
    limits: ServerLimits
    statistics: ServerStatistics
    ssl_context: ssl.SSLContext | None = None
    """TLS: HTTPS and WSS (None: plain HTTP)."""
    name: str = "API"
    """What it serves, for the log (``API``, ``metrics``)."""
    reuse_port: bool = False
    """Share the port with other processes listening on it the same way."""

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, report ready, serve; stop accepting when the mailbox closes."""
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(
                    serve_asgi, self.app,
                    host=self.host, port=self.port, limits=self.limits,
                    shutdown_trigger=stop.wait, statistics=self.statistics,
                    ssl_context=self.ssl_context, reuse_port=self.reuse_port,
                    error_log=logging.getLogger("aiki.server.http"),
                )
            )  # fmt: skip
            self.listening.urls[:] = list(urls)
            logger.info("%s listening on %s", self.name, ", ".join(urls))
            task_status.started()
            async for _ in inbox:
                pass
            stop.set()
