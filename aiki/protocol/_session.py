"""The session protocol: requests, replies and pushes over one WebSocket, without I/O.

Every frame is one JSON text message:

- request: ``{"id": 7, "op": "start_run", "body": {...}}``; ``"id": null`` wants no reply;
- reply: ``{"id": 7, "ok": {...}}`` or ``{"id": 7, "error": {"code": ..., "message": ...}}``,
  in any order (the server handles a session's requests concurrently);
- push to a worker: ``{"push": {...}}`` (`StopRun`);
- live updates of a subscription: ``{"subscription": "s1", "updates": [...]}``,
  ``{"subscription": "s1", "progress": [...]}`` or ``{"subscription": "s1", "resync": true}``.

`ClientProtocol` is one client's side (the worker link, the client session, watches): it
numbers requests and turns incoming frames into `SessionEvent` values. The server's side
is `read_request` and the ``*_frame`` functions. Neither does I/O: the WebSocket belongs
to the caller, in the manner of h11 and wsproto.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import attrs
import orjson

from ..errors import AikiError, BadRequestError, NotFoundError, PayloadTooLargeError
from ..wire import CodecError, WireCodec
from ._bounds import request_problems
from ._errors import decode_error, encode_error
from ._live import RUN_UPDATE, TASK_PROGRESS, RunUpdate, TaskProgress
from ._operation import Operation, Request
from ._workers import StopRun

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._operation import Registry

P = TypeVar("P")

SESSION_PATH: Final = "/api/v1/session"
"""Where the session is served, under the server's base URL."""

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
"""The largest frame a client accepts from the server."""

PUSH: Final = WireCodec[StopRun](StopRun)

_EXPECTED: Final = '{"id": ..., "op": ..., "body": {...}}'


def session_url(base_url: str) -> str:
    """The session's WebSocket URL for a server's base URL (``http`` → ``ws``)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + SESSION_PATH


# -- the client's side ---------------------------------------------------------------------------


@attrs.frozen
class Replied:
    """The reply to request ``request_id``: its ``ok`` body (to decode with the request's
    operation, `Outgoing.result`), or the error it carried."""

    request_id: int
    body: object
    error: AikiError | None


@attrs.frozen
class Pushed:
    """A command the server pushed to this worker (stop a run)."""

    message: StopRun


@attrs.frozen
class Published:
    """Live updates of one subscription (``resync``: some were dropped before these)."""

    subscription: str
    updates: tuple[RunUpdate, ...] = ()
    progress: tuple[TaskProgress, ...] = ()
    resync: bool = False


SessionEvent = Replied | Pushed | Published


class FrameError(ValueError):
    """A frame from the server does not follow the protocol (the session should end)."""


@attrs.frozen
class Outgoing(Generic[P]):
    """A request ready to send: its number (None for a notice, which wants no reply), its
    frame, and the operation whose reply it awaits."""

    request_id: int | None
    frame: str
    operation: Operation[Request[P], P]

    def result(self, replied: Replied) -> P:
        """The decoded reply.

        Raises:
            aiki.AikiError: the server's error for the request (the matching subclass).
            FrameError: the reply does not decode as the operation's reply type.
        """
        if replied.error is not None:
            raise replied.error
        try:
            return self.operation.reply.structure(replied.body)
        except CodecError as exc:
            raise FrameError(f"a malformed {self.operation.name} reply: {exc}") from None


class ClientProtocol:
    """A client's side of one session: numbers requests and reads the server's frames."""

    def __init__(self, operations: Registry) -> None:
        self._operations = operations
        self._ids = itertools.count()

    def request(self, request: Request[P]) -> Outgoing[P]:
        """The frame of ``request``, numbered for its reply."""
        operation = self._operations.of(request)
        request_id = next(self._ids)
        body = operation.request.encode(request)
        frame = b'{"id":%d,"op":"%s","body":%s}' % (request_id, operation.name.encode(), body)
        return Outgoing(request_id, frame.decode(), operation)

    def notice(self, request: Request[P]) -> Outgoing[P]:
        """The frame of ``request`` sent without wanting a reply (``"id": null``)."""
        operation = self._operations.of(request)
        body = operation.request.encode(request)
        frame = b'{"id":null,"op":"%s","body":%s}' % (operation.name.encode(), body)
        return Outgoing(None, frame.decode(), operation)

    def receive(self, text: str) -> SessionEvent:
        """Read one frame from the server.

        Raises:
            FrameError: not JSON, or not a frame of this protocol.
        """
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"a frame that is not JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise FrameError("a frame that is not a JSON object")
        try:
            if "push" in frame:
                return Pushed(PUSH.structure(frame["push"]))
            if isinstance(subscription := frame.get("subscription"), str):
                return Published(
                    subscription,
                    tuple(RUN_UPDATE.structure(raw) for raw in frame.get("updates", ())),
                    tuple(TASK_PROGRESS.structure(raw) for raw in frame.get("progress", ())),
                    frame.get("resync") is True,
                )
        except (CodecError, TypeError) as exc:
            raise FrameError(f"a malformed push: {exc}") from None
        request_id = frame.get("id")
        if not isinstance(request_id, int):
            raise FrameError(f"a reply without a request number: {text[:200]}")
        if "error" in frame:
            return Replied(request_id, None, decode_error(frame["error"]))
        if "ok" not in frame:
            raise FrameError(f"a reply with neither ok nor error: {text[:200]}")
        return Replied(request_id, frame["ok"], None)


# -- the server's side ---------------------------------------------------------------------------


@attrs.frozen
class Incoming:
    """One request read from a session frame."""

    frame_id: bytes
    """The request's ``id`` as JSON, echoed in the reply (``null``: no reply wanted)."""
    operation: Operation[Any, Any]
    request: object

    @property
    def wants_reply(self) -> bool:
        """False for a notice (``"id": null``)."""
        return self.frame_id != b"null"


@attrs.define
class RequestError(Exception):
    """A frame that cannot be carried out: ``error`` is the reply for ``frame_id``."""

    frame_id: bytes
    error: AikiError


def decode_request(
    operations: Registry,
    name: str,
    body: bytes | dict[str, object],
    *,
    admit: Callable[[Operation[Any, Any]], None] | None = None,
) -> tuple[Operation[Any, Any], object]:
    """The operation ``name`` and its request decoded from ``body`` (raw JSON from HTTP, or a
    session frame's parsed body), whichever the carrier, checked against the bounds every
    field has (`request_problems`).

    Args:
        admit: called with the operation before the body is decoded; raises to refuse the
            caller (who may not call it) without looking at the body.

    Raises:
        aiki.AikiError: what ``admit`` raised.
        aiki.NotFoundError: no operation has that name.
        aiki.BadRequestError: the body is not a valid request, or a value is out of bounds
            (``errors`` name the fields).
    """
    operation = operations.named(name)
    if operation is None:
        known = ", ".join(sorted(operations.by_name))
        raise NotFoundError(f"unknown operation {name!r}; known: {known}")
    if admit is not None:
        admit(operation)
    try:
        if isinstance(body, dict):
            request = operation.request.structure(body)
        else:
            request = operation.request.decode(body)
    except CodecError as exc:
        raise BadRequestError(f"invalid {name} request: {exc}", errors=exc.errors) from None
    if problems := request_problems(request):
        raise BadRequestError(f"invalid {name} request: {problems[0]}", errors=tuple(problems))
    return operation, request


def read_request(
    operations: Registry,
    text: str,
    *,
    max_bytes: int,
    admit: Callable[[Operation[Any, Any]], None] | None = None,
) -> Incoming:
    """Read one request frame from a client (``admit``: see `decode_request`).

    Raises:
        RequestError: the frame is too large, malformed, or names an unknown operation or
            an invalid request; its ``error`` is the reply to send.
    """
    frame_id = b"null"
    try:
        if len(text) > max_bytes:
            raise PayloadTooLargeError(f"frame exceeds {max_bytes} bytes")
        try:
            frame = orjson.loads(text)
            frame_id = orjson.dumps(frame["id"])
            name, body = frame["op"], frame["body"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadRequestError(f"malformed frame ({exc}); expected {_EXPECTED}") from None
        if not isinstance(name, str):
            raise BadRequestError(f"the frame's op must be a string; expected {_EXPECTED}")
        if not isinstance(body, dict):
            raise BadRequestError("the frame's body must be a JSON object")
        operation, request = decode_request(operations, name, body, admit=admit)
    except AikiError as exc:
        raise RequestError(frame_id, exc) from None
    return Incoming(frame_id, operation, request)


def reply_frame(incoming: Incoming, reply: object) -> bytes:
    """The frame answering ``incoming`` with ``reply``."""
    return b'{"id":' + incoming.frame_id + b',"ok":' + incoming.operation.reply.encode(reply) + b"}"


def error_frame(frame_id: bytes, error: AikiError) -> bytes:
    """The frame answering request ``frame_id`` with ``error``."""
    return b'{"id":' + frame_id + b"," + encode_error(error)[1:]


def push_frame(message: StopRun) -> bytes:
    """The frame pushing ``message`` to a worker."""
    return b'{"push":' + PUSH.encode(message) + b"}"


def publication_frames(
    subscription: str,
    updates: Sequence[RunUpdate | TaskProgress],
    *,
    resync: bool,
) -> list[bytes]:
    """The frames carrying one batch of a subscription's updates: a resync marker first
    (if due), then the run changes, then the task progress."""
    prefix = b'{"subscription":' + orjson.dumps(subscription)
    frames = []
    if resync:
        frames.append(prefix + b',"resync":true}')
    changes = [RUN_UPDATE.encode(u) for u in updates if isinstance(u, RunUpdate)]
    progress = [TASK_PROGRESS.encode(p) for p in updates if isinstance(p, TaskProgress)]
    if changes:
        frames.append(prefix + b',"updates":[' + b",".join(changes) + b"]}")
    if progress:
        frames.append(prefix + b',"progress":[' + b",".join(progress) + b"]}")
    return frames
