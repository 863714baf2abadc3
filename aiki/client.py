"""The client: start runs, look them up, wait for them. Works under trio and asyncio.

::

    async with aiki.Client("http://127.0.0.1:8470") as client:
        handle = await process_order.start(client, order)
        result = await handle.wait_for_status("completed")
        if result.success:
            print(result.output)
        else:
            print(result.status, result.error)

It speaks HTTP through httpx, which runs on anyio: the same client serves a trio
program, a FastAPI or Django (asyncio) application, or a script. Under trio, inside
``async with``, requests go over one multiplexed WebSocket session instead (several
times cheaper per request on both ends). Waiting does not poll: each ``wait_run``
request is held by the server until the run changes (long-poll, always over HTTP).
Deadlines belong to the caller (``trio.fail_after`` / ``anyio.fail_after`` /
``asyncio.timeout``).
"""

from __future__ import annotations

import collections
import contextlib
import typing
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import attrs
import httpx
import orjson
import sniffio
import trio

from transport import CodecError

from ._client_session import ClientSession
from ._operation_table import OPERATION_OF, OPERATIONS
from ._protocol import (
    ERROR_BODY,
    CancelRun,
    EventSent,
    GetRun,
    ListRuns,
    PauseRun,
    RequeueRun,
    ResumeRun,
    RunInfo,
    RunPage,
    RunsStopped,
    RunStarted,
    RunTransitioned,
    SendEvent,
    StartRun,
    WaitRun,
    WakeupRun,
    WokenUp,
)
from ._protocol_live import RunUpdate, Subscribe
from ._protocol_schedules import (
    DeactivateSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    ScheduleDetails,
    ScheduleInfo,
    SchedulePage,
    ScheduleStatus,
)
from ._protocol_views import DescribeRun, ListWorkers, RunDetails, WorkerInfo, WorkerList
from ._schedule import ScheduleHandle
from ._states import TERMINAL, RunStatus
from ._watch import Watch
from .errors import (
    AikiError,
    ErrorInfo,
    PushUnavailableError,
    UnavailableError,
    error_from_reply,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from ._workflow import WorkflowVersion

O = TypeVar("O")

WAIT_SLICE_SECONDS: Final = 30.0
"""How long one long-poll request asks the server to hold it."""


def _running_trio() -> bool:
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def _raise_error(status: int, body: bytes) -> typing.NoReturn:
    try:
        error = ERROR_BODY.structure(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError, CodecError):
        raise AikiError(f"server answered {status}: {body[:200]!r}") from None
    raise error_from_reply(error.code, error.message, errors=error.errors, run_id=error.run_id)


class Client:
    """A connection to an Aiki server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8470``.
        http: an httpx client to use (e.g. with your own TLS or proxy settings).
        session: under trio, inside ``async with``, send requests over one WebSocket
            session (the default); False keeps every request on HTTP, and without
            WebSockets `watch` is unavailable and waits long-poll. (WebSockets do not use
            ``http``'s settings.)
    """

    def __init__(
        self, url: str, *, http: httpx.AsyncClient | None = None, session: bool = True
    ) -> None:
        self.url = url.rstrip("/")
        self._wants_session = session
        self.requests: collections.Counter[str] = collections.Counter()
        """Requests sent so far, by operation name (over HTTP and the session)."""
        self._session: ClientSession | None = None
        self._session_stack: contextlib.AsyncExitStack | None = None
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=WAIT_SLICE_SECONDS + 15.0),
            # Idle connections are dropped well before the server's 75 s keep-alive timeout.
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=64, keepalive_expiry=15.0
            ),
        )

    async def __aenter__(self) -> Client:
        if self._wants_session and _running_trio():
            self._session_stack = contextlib.AsyncExitStack()
            nursery = await self._session_stack.enter_async_context(trio.open_nursery())
            self._session = ClientSession(self.url, nursery, self.requests)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._session is not None and self._session_stack is not None:
                session, stack = self._session, self._session_stack
                self._session, self._session_stack = None, None
                await session.aclose()
                await stack.__aexit__(exc_type, exc, traceback)
        finally:
            await self.aclose()

    @property
    def can_push(self) -> bool:
        """Whether `watch` works here: under trio inside ``async with`` (on the client's
        WebSocket session), or under asyncio (a WebSocket per watch)."""
        if _running_trio():
            return self._session is not None
        return self._wants_session

    def watch(
        self,
        run: str | RunHandle[typing.Any] | None = None,
        *,
        runs: Iterable[str | RunHandle[typing.Any]] = (),
        workflow: str | None = None,
        version: str | None = None,
        statuses: Iterable[RunStatus] = (),
        after_revision: int | None = None,
        progress: bool = False,
    ) -> Watch:
        """Live updates of runs, pushed by the server as their changes commit.

        Watch one run, a set of ``runs``, a ``workflow`` (and ``version``), or, with no
        arguments, every run; ``statuses`` keeps only updates to those statuses. A watch
        of given runs starts from their state when it begins (`Watch.runs`), or with
        ``after_revision`` replays their recorded changes after it (0: from creation).
        Each run's updates come in order, none missed or twice, across reconnects. With
        ``progress``, the tasks' `aiki.progress` reports come too (`aiki.TaskProgress`).

        ::

            async with client.watch(handle) as updates:
                async for update in updates:
                    print(update.status, update.revision)

        Raises:
            aiki.PushUnavailableError: under trio, the client is not in ``async with``
                (or was made with ``session=False``): there is no session to push on.
        """
        if not self.can_push:
            raise PushUnavailableError(
                "live updates need a WebSocket: under trio use `async with aiki.Client(...)` "
                "(with the default session=True)"
            )
        ids = [item if isinstance(item, str) else item.run_id for item in runs]
        if run is not None:
            ids.insert(0, run if isinstance(run, str) else run.run_id)
        request = Subscribe(
            run_ids=tuple(dict.fromkeys(ids)), workflow=workflow, version=version,
            statuses=tuple(statuses), after_revision=after_revision, progress=progress,
        )  # fmt: skip
        return Watch(self.url, self._session, request, self.requests)

    async def aclose(self) -> None:
        """Close the HTTP connections (if this client created them)."""
        if self._owns_http:
            await self._http.aclose()

    async def call(self, request: object) -> object:
        """Send one operation request and return the decoded reply.

        Raises:
            aiki.AikiError: the subclass matching the server's error code.
            aiki.UnavailableError: the server could not be reached.
        """
        if self._session is not None and not isinstance(request, WaitRun):
            return await self._session.call(request)
        name = OPERATION_OF[type(request)]
        self.requests[name] += 1
        operation = OPERATIONS[name]
        try:
            response = await self._http.post(
                f"{self.url}/api/v1/{name}",
                content=operation.request.encode(request),
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:
            raise UnavailableError(f"cannot reach the Aiki server at {self.url}: {exc}") from exc
        if response.status_code != 200:
            _raise_error(response.status_code, response.content)
        return operation.reply.decode(response.content)

    async def start_run(self, request: StartRun) -> RunStarted:
        """Start a run from a raw request (prefer ``WorkflowVersion.start``)."""
        return typing.cast("RunStarted", await self.call(request))

    async def get_run(self, request: GetRun) -> RunInfo:
        """Look a run up by ID or reference ID."""
        return typing.cast("RunInfo", await self.call(request))

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        version: str | None = None,
        statuses: tuple[RunStatus, ...] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """A page of runs, newest first; pass ``next_cursor`` back for the next page."""
        request = ListRuns(
            workflow=workflow, version=version, statuses=statuses, limit=limit, cursor=cursor
        )
        return typing.cast("RunPage", await self.call(request))

    async def describe_run(self, run_id: str) -> RunDetails:
        """A run with its tasks (and their failed attempts) and its timeline of transitions.

        Raises:
            aiki.RunNotFoundError: no such run.
        """
        return typing.cast("RunDetails", await self.call(DescribeRun(run_id=run_id)))

    async def list_workers(self, *, include_gone: bool = False) -> tuple[WorkerInfo, ...]:
        """The registered workers, most recently seen first (``include_gone``: also those
        declared dead)."""
        reply = typing.cast("WorkerList", await self.call(ListWorkers(include_gone=include_gone)))
        return reply.workers

    async def requeue(self, run_id: str, *, reason: str = "requeued") -> RunTransitioned:
        """Release a running or stalled run and queue it again (recovery)."""
        return typing.cast(
            "RunTransitioned", await self.call(RequeueRun(run_id=run_id, reason=reason))
        )

    async def cancel(self, run_id: str, *, reason: str = "cancelled") -> RunsStopped:
        """Cancel a run and all its unfinished descendants (a running one stops at once)."""
        request = CancelRun(run_id=run_id, reason=reason)
        return typing.cast("RunsStopped", await self.call(request))

    async def pause(self, run_id: str, *, reason: str = "paused") -> RunsStopped:
        """Pause a run; a running one stops and later resumes from its history."""
        return typing.cast("RunsStopped", await self.call(PauseRun(run_id=run_id, reason=reason)))

    async def resume(self, run_id: str) -> RunTransitioned:
        """Resume a paused run."""
        return typing.cast("RunTransitioned", await self.call(ResumeRun(run_id=run_id)))

    async def wakeup(self, run_id: str) -> WokenUp:
        """End the run's pending sleeps now; they report being cut short."""
        return typing.cast("WokenUp", await self.call(WakeupRun(run_id=run_id)))

    async def send_event(
        self, run_id: str, name: str, payload: object = None, *, reference_id: str | None = None
    ) -> EventSent:
        """Send a raw (JSON) event; prefer ``handle.events.<name>.send`` for typed payloads."""
        request = SendEvent(run_id=run_id, name=name, payload=payload, reference_id=reference_id)
        return typing.cast("EventSent", await self.call(request))

    def handle(self, run_id: str) -> RunHandle[object]:
        """A handle on any run by ID (outputs stay plain JSON; use the version for types)."""
        return RunHandle(self, run_id, None)

    # -- schedules (activate with ``aiki.schedule(...).activate``) -------------------------------

    async def list_schedules(
        self,
        *,
        workflow: str | None = None,
        statuses: tuple[ScheduleStatus, ...] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> SchedulePage:
        """A page of schedules, newest first; pass ``next_cursor`` back for the next page."""
        request = ListSchedules(workflow=workflow, statuses=statuses, limit=limit, cursor=cursor)
        return typing.cast("SchedulePage", await self.call(request))

    async def describe_schedule(
        self,
        schedule_id: str | None = None,
        *,
        reference_id: str | None = None,
        upcoming: int = 5,
        recent_runs: int = 10,
    ) -> ScheduleDetails:
        """A schedule (by ID or reference ID) with its next fire times and latest runs.

        Raises:
            aiki.ScheduleNotFoundError: there is no such schedule.
        """
        request = GetSchedule(schedule_id=schedule_id, reference_id=reference_id,
                              upcoming=upcoming, recent_runs=recent_runs)  # fmt: skip
        return typing.cast("ScheduleDetails", await self.call(request))

    async def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Stop a schedule firing until resumed."""
        return typing.cast("ScheduleInfo", await self.call(PauseSchedule(schedule_id=schedule_id)))

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Fire a paused schedule again, from its next occurrence after now."""
        request = ResumeSchedule(schedule_id=schedule_id)
        return typing.cast("ScheduleInfo", await self.call(request))

    async def deactivate_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Stop a schedule for good (its runs are not touched)."""
        request = DeactivateSchedule(schedule_id=schedule_id)
        return typing.cast("ScheduleInfo", await self.call(request))

    def schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        """A handle on a schedule by ID (no request is made)."""
        return ScheduleHandle(self, schedule_id)


@attrs.frozen(kw_only=True)
class RunResult(Generic[O]):
    """The outcome of `RunHandle.wait_for_status`.

    Attributes:
        success: the run reached the status waited for.
        status: the run's status now (a terminal one if ``success`` is False).
        run: everything the server knows about the run.
        output: the run's output as the declared type, once completed.
        error: why the run failed (type, message, traceback, cause), if it did.
    """

    success: bool
    status: RunStatus
    run: RunInfo
    output: O | None = None
    error: ErrorInfo | None = None


class RunHandle(Generic[O]):
    """A run started (or looked up) through a client."""

    def __init__(
        self,
        client: Client,
        run_id: str,
        version: WorkflowVersion[typing.Any, O] | None,
        *,
        info: RunInfo | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.version = version
        self.info = info
        """The run as last seen (after `refresh` or a wait)."""

    def __repr__(self) -> str:
        status = self.info.status if self.info else "?"
        return f"<aiki run {self.run_id} ({status})>"

    @property
    def events(self) -> HandleEvents:
        """The run's declared events: ``await handle.events.<name>.send(data)``."""
        return HandleEvents(self)

    async def cancel(self, *, reason: str = "cancelled") -> RunsStopped:
        """Cancel this run and its unfinished descendants."""
        return await self.client.cancel(self.run_id, reason=reason)

    async def pause(self, *, reason: str = "paused") -> RunsStopped:
        """Pause this run."""
        return await self.client.pause(self.run_id, reason=reason)

    async def resume(self) -> RunTransitioned:
        """Resume this paused run."""
        return await self.client.resume(self.run_id)

    async def wakeup(self) -> WokenUp:
        """Cut this run's pending sleeps short."""
        return await self.client.wakeup(self.run_id)

    async def refresh(self) -> RunInfo:
        """Fetch the run's current state."""
        self.info = await self.client.get_run(GetRun(run_id=self.run_id))
        return self.info

    async def wait_for_status(self, status: RunStatus) -> RunResult[O]:
        """Wait until the run reaches ``status``, or a terminal status that rules it out.

        The server pushes the run's changes over a WebSocket (`Client.watch`); nothing
        polls. Only if no WebSocket can be had does it fall back to long-polling (each
        request held by the server until the run changes). There is no timeout
        parameter: wrap the call in your own deadline.

        Raises:
            aiki.RunNotFoundError: the run does not exist.
            aiki.UnavailableError: the server could not be reached.
        """
        if self.client.can_push:
            try:
                return await self._wait_pushed(status)
            except UnavailableError:
                pass  # no WebSocket: long-poll instead
        return await self._wait_polled(status)

    async def _wait_pushed(self, status: RunStatus) -> RunResult[O]:
        async with self.client.watch(self.run_id) as updates:
            info = updates.runs[self.run_id]
            reached = info.status
            while not (reached == status or reached in TERMINAL):
                update = await updates.__anext__()
                assert isinstance(update, RunUpdate)  # no progress asked; resyncs itself
                reached = update.status
                if update.run is not None:
                    info = update.run  # the run as it ended
        if info.status != reached:  # reached a status on the way: read the run once
            info = await self.client.get_run(GetRun(run_id=self.run_id))
        self.info = info
        return self._result(info, success=reached == status)

    async def _wait_polled(self, status: RunStatus) -> RunResult[O]:
        while True:
            info = typing.cast(
                "RunInfo",
                await self.client.call(
                    WaitRun(
                        run_id=self.run_id, statuses=(status,), timeout_seconds=WAIT_SLICE_SECONDS
                    )
                ),
            )
            self.info = info
            if info.status == status or info.status in TERMINAL:
                return self._result(info, success=info.status == status)

    def _result(self, info: RunInfo, *, success: bool) -> RunResult[O]:
        output: O | None = None
        if info.status == "completed":
            output = (
                self.version.output_type.from_json(info.output)
                if self.version
                else typing.cast("O", info.output)
            )
        return RunResult(
            success=success, status=info.status, run=info, output=output, error=info.error
        )


class HandleEvent:
    """One declared event of a run, seen from outside: `send` it."""

    def __init__(self, handle: RunHandle[typing.Any], name: str, definition: object) -> None:
        self._handle = handle
        self._name = name
        self._definition = definition

    async def send(self, data: object = None, *, reference_id: str | None = None) -> EventSent:
        """Send the event; a repeated ``reference_id`` is ignored (``duplicate`` is True).

        Raises:
            aiki.ValidationError: ``data`` does not fit the event's payload type.
            aiki.InvalidTransitionError: the run has ended.
        """
        payload = data
        if self._definition is not None:
            payload = self._definition.payload.to_json(data)  # type: ignore[attr-defined]
        return await self._handle.client.send_event(
            self._handle.run_id, self._name, payload, reference_id=reference_id
        )


class HandleEvents:
    """``handle.events.<name>``: typed with the handle's workflow version, raw otherwise."""

    def __init__(self, handle: RunHandle[typing.Any]) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> HandleEvent:
        version = self._handle.version
        if version is None:
            return HandleEvent(self._handle, name, None)
        definition = version.events.get(name)
        if definition is None:
            declared = ", ".join(sorted(version.events)) or "none"
            raise AttributeError(f"{version.workflow}@{version.version} declares no event "
                                 f"{name!r} (declared: {declared})")  # fmt: skip
        return HandleEvent(self._handle, name, definition)
