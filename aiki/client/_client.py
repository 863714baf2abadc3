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
times cheaper per request on both ends). Waiting does not poll: `RunHandle.wait_for_status`
and `Client.watch` ride updates the server pushes over a WebSocket (the session under
trio, a WebSocket of its own under asyncio); only where no WebSocket can be had does
waiting fall back to ``wait_run`` requests the server holds until the run changes.
Deadlines belong to the caller (``trio.fail_after`` / ``anyio.fail_after`` /
``asyncio.timeout``).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import typing
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import httpx
import sniffio
import trio

from ..errors import (
    ConflictError,
    PushUnavailableError,
    RunNotFoundError,
    UnavailableError,
)
from ..protocol import (
    OPERATIONS,
    ActivateSchedule,
    CancelRun,
    CreateKey,
    DeactivateSchedule,
    DescribeRun,
    EventSent,
    GetRun,
    GetSchedule,
    Identity,
    KeyCreated,
    KeyInfo,
    LimitInfo,
    ListKeys,
    ListLimits,
    ListRuns,
    ListSchedules,
    ListVersions,
    ListWorkers,
    PauseRun,
    PauseSchedule,
    RequeueRun,
    ResumeRun,
    ResumeSchedule,
    RetryRun,
    RetryRuns,
    RevokeKey,
    Role,
    RunDetails,
    RunInfo,
    RunPage,
    RunsRetried,
    RunsStopped,
    RunStarted,
    RunStatus,
    RunTransitioned,
    ScheduleDetails,
    ScheduleInfo,
    SchedulePage,
    ScheduleStatus,
    SendEvent,
    SetLimit,
    StartRun,
    Subscribe,
    VersionInfo,
    WaitRun,
    WakeupRun,
    WhoAmI,
    WokenUp,
    WorkerInfo,
)
from ._connection import answer_error, auth_headers, clean_key, reason_of, tls_for
from ._handles import WAIT_SLICE_SECONDS, RunHandle, ScheduleHandle
from ._servers import Servers
from ._session import CLOSE_SECONDS, ClientSession, exit_without_group
from ._watch import Watch

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

    from ..protocol import Request
    from ..sdk import WorkflowVersion

P = TypeVar("P")
O = TypeVar("O")

API_KEY_ENV: Final = "AIKI_API_KEY"
"""Where `Client` (and ``aiki worker``, and the CLI) find the API key if none is given."""
CA_FILE_ENV: Final = "AIKI_CA_FILE"
"""Where they find a private CA's certificate to trust for an ``https://`` server."""


CLIENT_CERT_ENV: Final = "AIKI_CLIENT_CERT"
"""Where they find a client certificate (PEM) for a server that asks for one (mutual TLS)."""
CLIENT_KEY_ENV: Final = "AIKI_CLIENT_KEY"
"""Where they find that certificate's private key (PEM), unless the certificate file holds it."""


def _running_trio() -> bool:
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


class _Sent(Exception):
    """A request that failed after it was sent: not to be tried on another server."""

    def __init__(self, error: UnavailableError) -> None:
        super().__init__(str(error))
        self.error = error


class Client:
    """A connection to an Aiki server (or several: see ``url``).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8470``; or several servers
            of one deployment, comma-separated (or a list): the client uses one at a time
            and moves on to the next when it cannot be reached or its session drops.
        api_key: the API key to act with (``aiki_...``; spaces and line breaks around it
            are dropped); default: ``AIKI_API_KEY`` from the environment, if set (a server
            run with ``--insecure-no-auth`` needs none).
        ca_file: for an ``https://`` server whose certificate a private CA signed: that
            CA's certificate (PEM); default: ``AIKI_CA_FILE``, if set, else the system's
            trusted authorities.
        client_cert: for a server that asks for client certificates (mutual TLS): this
            client's certificate (PEM); default: ``AIKI_CLIENT_CERT``, if set.
        client_key: that certificate's private key (PEM), unless ``client_cert`` holds
            it; default: ``AIKI_CLIENT_KEY``, if set.
        namespace: act in this namespace: with an admin key of every namespace, what the
            client creates goes there and it sees only that namespace's (a key of one
            namespace may name only its own); default: the key's.
        http: an httpx client to use (e.g. with your own TLS or proxy settings).
        session: under trio, inside ``async with``, send requests over one WebSocket
            session (the default); False keeps every request on HTTP, and without
            WebSockets `watch` is unavailable and waits long-poll. (WebSockets do not use
            ``http``'s settings.)

    Raises:
        aiki.UnauthenticatedError: ``api_key`` is not shaped like a key (the message does
            not quote it).
        aiki.ValidationError: ``ca_file`` or ``client_cert`` cannot be used.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        api_key: str | None = None,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        namespace: str | None = None,
        http: httpx.AsyncClient | None = None,
        session: bool = True,
    ) -> None:
        self.servers = Servers(url)
        """The servers, and the one in use."""
        self.url = str(self.servers)
        self._api_key = clean_key(
            api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        )
        self._tls = tls_for(
            ca_file if ca_file is not None else os.environ.get(CA_FILE_ENV),
            client_cert if client_cert is not None else os.environ.get(CLIENT_CERT_ENV),
            client_key if client_key is not None else os.environ.get(CLIENT_KEY_ENV),
        )
        self._auth = auth_headers(self._api_key, namespace)
        self._headers = {"content-type": "application/json", **self._auth}
        self._wants_session = session
        self.requests: collections.Counter[str] = collections.Counter()
        """Requests sent so far, by operation name (over HTTP and the session)."""
        self._session: ClientSession | None = None
        self._session_stack: contextlib.AsyncExitStack | None = None
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            verify=self._tls if self._tls is not None else True,
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
            self._session = ClientSession(self.servers, nursery, self.requests, self._auth,
                                          self._tls)  # fmt: skip
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
                try:
                    with anyio.move_on_after(CLOSE_SECONDS, shield=True):
                        await session.aclose()
                finally:
                    # The nursery of the session's reader, which ends with its connection
                    # (a scope opened after the nursery cannot hold its exit).
                    await exit_without_group(stack, exc_type, exc, traceback)  # noqa: ASYNC102
        finally:
            with anyio.move_on_after(CLOSE_SECONDS, shield=True):
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
        of given runs yields first each run's state when it begins (``reason="watch
        began"``; also in `Watch.runs`), or with ``after_revision`` replays their recorded
        changes after it instead (0: from creation).
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
        return Watch(self.servers, self._session, request, self.requests, self._auth, self._tls)

    async def aclose(self) -> None:
        """Close the HTTP connections (if this client created them)."""
        if self._owns_http:
            await self._http.aclose()

    async def call(self, request: Request[P]) -> P:
        """Send one operation's request and return its reply (typed by the request).

        Raises:
            aiki.AikiError: the subclass matching the server's error code.
            aiki.UnavailableError: the server could not be reached.
        """
        if self._session is not None and not isinstance(request, WaitRun):
            return await self._session.call(request)
        operation = OPERATIONS.of(request)
        self.requests[operation.name] += 1
        body = operation.request.encode(request)

        async def post(url: str) -> httpx.Response:
            try:
                return await self._http.post(
                    f"{url}/api/v1/{operation.name}", content=body, headers=self._headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
                raise UnavailableError(
                    f"cannot reach the Aiki server at {url}: {reason_of(exc)}"
                ) from exc
            except httpx.TransportError as exc:  # sent: not repeated on another server
                self.servers.failed(url)
                raise _Sent(UnavailableError(f"request to {url} failed: {reason_of(exc)}")) from exc

        try:
            response = await self.servers.first_reachable(post)
        except _Sent as sent:
            raise sent.error from sent.__cause__
        if response.status_code != 200:
            raise answer_error(response.status_code, response.content)
        return operation.reply.decode(response.content)

    async def start_run(self, request: StartRun) -> RunStarted:
        """Start a run from a raw request (prefer ``WorkflowVersion.start``)."""
        return await self.call(request)

    async def get_run(self, request: GetRun) -> RunInfo:
        """Look a run up by ID or reference ID."""
        return await self.call(request)

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        version: str | None = None,
        statuses: tuple[RunStatus, ...] = (),
        reference_id: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """A page of runs, newest first; pass ``next_cursor`` back for the next page.

        ``reference_id`` finds the runs started with that reference ID; ``parent_id``
        lists a run's children.
        """
        request = ListRuns(
            workflow=workflow, version=version, statuses=statuses, reference_id=reference_id,
            parent_id=parent_id, limit=limit, cursor=cursor,
        )  # fmt: skip
        return await self.call(request)

    async def find_run(
        self, reference_id: str, *, workflow: str | None = None, version: str | None = None
    ) -> RunInfo:
        """The run started with ``reference_id`` (of ``workflow`` and ``version``, if
        given: a reference ID is unique per workflow version).

        Raises:
            aiki.RunNotFoundError: no run has it.
            aiki.ConflictError: several runs have it (of different workflows or
                versions): name the workflow and version, or use a run ID.
        """
        page = await self.list_runs(reference_id=reference_id, workflow=workflow,
                                    version=version, limit=3)  # fmt: skip
        if not page.runs:
            raise RunNotFoundError(f"no run with reference ID {reference_id!r}")
        if len(page.runs) > 1:
            named = ", ".join(f"{run.id} ({run.workflow}@{run.version})" for run in page.runs)
            more = " and more" if page.next_cursor else ""
            raise ConflictError(
                f"reference ID {reference_id!r} names several runs: {named}{more}; give "
                "the workflow and version, or a run ID"
            )
        return page.runs[0]

    async def describe_run(self, run_id: str) -> RunDetails:
        """A run with its tasks (and their failed attempts) and its timeline of transitions.

        Raises:
            aiki.RunNotFoundError: no such run.
        """
        return await self.call(DescribeRun(run_id=run_id))

    async def list_workers(self, *, include_gone: bool = False) -> tuple[WorkerInfo, ...]:
        """The registered workers, most recently seen first (``include_gone``: also those
        declared dead)."""
        reply = await self.call(ListWorkers(include_gone=include_gone))
        return reply.workers

    async def list_versions(self, *, workflow: str | None = None) -> tuple[VersionInfo, ...]:
        """The registered workflow versions (of ``workflow``, if given), each with its open
        runs by status and the live workers serving it (``unserved_since``: it has open
        runs that no live worker serves)."""
        return (await self.call(ListVersions(workflow=workflow))).versions

    async def list_limits(self, name: str | None = None) -> tuple[LimitInfo, ...]:
        """The namespace's concurrency limits: their numbers in force and as declared,
        with the runs holding and waiting for their slots now; with ``name``, that one
        alone with its latest changes.

        Raises:
            aiki.NotFoundError: ``name`` is not a limit of the namespace.
        """
        return (await self.call(ListLimits(name=name))).limits

    async def set_limit(self, name: str, *, per_key: int, total: int | None = None) -> LimitInfo:
        """Change a concurrency limit's numbers now (admin keys only; kept in the limit's
        changes with the key's name). They hold until a worker registers a declaration of
        other numbers than those last declared.

        Raises:
            aiki.NotFoundError: no worker declared a limit of that name in the namespace.
            aiki.ForbiddenError: the key is not an admin's.
        """
        return await self.call(SetLimit(name=name, per_key=per_key, total=total))

    async def create_key(
        self,
        role: Role,
        *,
        namespace: str | None = "default",
        name: str = "",
        expires_in_seconds: float | None = None,
    ) -> KeyCreated:
        """Create an API key (admin keys only); the reply holds the key, shown this once.

        Raises:
            aiki.ForbiddenError: this client's key is not an admin key.
            aiki.ValidationError: a key other than an admin key without a namespace.
        """
        return await self.call(CreateKey(role=role, namespace=namespace, name=name,
                                         expires_in_seconds=expires_in_seconds))  # fmt: skip

    async def list_keys(self, *, include_revoked: bool = True) -> tuple[KeyInfo, ...]:
        """Every API key's record, newest first (admin keys only; never the keys)."""
        return (await self.call(ListKeys(include_revoked=include_revoked))).keys

    async def revoke_key(self, prefix: str) -> KeyInfo:
        """Revoke the key with ``prefix`` on every server, within a second (admin only).

        Raises:
            aiki.NotFoundError: no key has this prefix.
        """
        return await self.call(RevokeKey(prefix=prefix))

    async def whoami(self) -> Identity:
        """The key this client acts with, as the server sees it."""
        return await self.call(WhoAmI())

    async def requeue(self, run_id: str, *, reason: str = "requeued") -> RunTransitioned:
        """Release a running or stalled run and queue it again (recovery)."""
        return await self.call(RequeueRun(run_id=run_id, reason=reason))

    async def retry(self, run_id: str, *, reason: str = "retried") -> RunsRetried:
        """Queue a failed run again, after a fix: a fresh first attempt of its version that
        replays its completed tasks and runs its failed ones again; its failed children
        are retried with it.

        Raises:
            aiki.InvalidTransitionError: the run is not failed, or is a child run (retry
                its top-level run).
            aiki.RunNotFoundError: no such run.
        """
        return await self.call(RetryRun(run_id=run_id, reason=reason))

    async def retry_failed(
        self,
        workflow: str,
        *,
        version: str | None = None,
        failed_after: dt.datetime | None = None,
        failed_before: dt.datetime | None = None,
        limit: int = 100,
        reason: str = "retried",
    ) -> RunsRetried:
        """`retry` every failed top-level run of ``workflow`` (and ``version``) that failed
        in [``failed_after``, ``failed_before``), ``limit`` per request; runs that fail
        again meanwhile are not retried twice (``failed_before`` defaults to now).

        Returns:
            Every run retried: ``run_ids`` the top-level ones, ``affected`` with their
            children.
        """
        before = failed_before or dt.datetime.now(dt.UTC)
        run_ids: list[str] = []
        affected: list[str] = []
        while True:
            reply = await self.call(RetryRuns(
                workflow=workflow, version=version, failed_after=failed_after,
                failed_before=before, limit=limit, reason=reason))  # fmt: skip
            run_ids.extend(reply.run_ids)
            affected.extend(reply.affected)
            if not reply.more:
                return RunsRetried(run_ids=tuple(run_ids), affected=tuple(affected))

    async def cancel(self, run_id: str, *, reason: str = "cancelled") -> RunsStopped:
        """Cancel a run and all its unfinished descendants (a running one stops at once)."""
        request = CancelRun(run_id=run_id, reason=reason)
        return await self.call(request)

    async def pause(self, run_id: str, *, reason: str = "paused") -> RunsStopped:
        """Pause a run; a running one stops and later resumes from its history."""
        return await self.call(PauseRun(run_id=run_id, reason=reason))

    async def resume(self, run_id: str) -> RunTransitioned:
        """Resume a paused run."""
        return await self.call(ResumeRun(run_id=run_id))

    async def wakeup(self, run_id: str) -> WokenUp:
        """End the run's pending sleeps now; they report being cut short."""
        return await self.call(WakeupRun(run_id=run_id))

    async def send_event(
        self, run_id: str, name: str, payload: object = None, *, reference_id: str | None = None
    ) -> EventSent:
        """Send a raw (JSON) event; prefer ``handle.events.<name>.send`` for typed payloads."""
        request = SendEvent(run_id=run_id, name=name, payload=payload, reference_id=reference_id)
        return await self.call(request)

    @typing.overload
    def handle(self, run_id: str, *, info: RunInfo | None = None) -> RunHandle[object]: ...
    @typing.overload
    def handle(
        self, run_id: str, version: WorkflowVersion[typing.Any, O], *, info: RunInfo | None = None
    ) -> RunHandle[O]: ...
    def handle(
        self,
        run_id: str,
        version: WorkflowVersion[typing.Any, typing.Any] | None = None,
        *,
        info: RunInfo | None = None,
    ) -> RunHandle[typing.Any]:
        """A handle on a run by ID (no request is made). With ``version``, its output and
        events are typed by the version; without, they stay plain JSON. ``info`` is the
        run as already seen, if it was."""
        return RunHandle(self, run_id, version, info=info)

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
        return await self.call(request)

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
        return await self.call(request)

    async def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Stop a schedule firing until resumed."""
        return await self.call(PauseSchedule(schedule_id=schedule_id))

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Fire a paused schedule again, from its next occurrence after now."""
        request = ResumeSchedule(schedule_id=schedule_id)
        return await self.call(request)

    async def deactivate_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Stop a schedule for good (its runs are not touched)."""
        request = DeactivateSchedule(schedule_id=schedule_id)
        return await self.call(request)

    async def activate_schedule(self, request: ActivateSchedule) -> ScheduleHandle:
        """Activate a schedule from a raw request (prefer ``aiki.schedule(...).activate``)."""
        activated = await self.call(request)
        return ScheduleHandle(self, activated.schedule.id, info=activated.schedule,
                              created=activated.created)  # fmt: skip

    def schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        """A handle on a schedule by ID (no request is made)."""
        return ScheduleHandle(self, schedule_id)
