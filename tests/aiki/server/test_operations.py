"""The operation registry: every declared operation has exactly one handler, typed as
declared, and each one answers through a real carrier (HTTP or a WebSocket session)."""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import attrs
import pytest
import trio

import aiki
from aiki.client import SessionConnection
from aiki.errors import ErrorInfo
from aiki.protocol import (
    ADMINS,
    ANYONE,
    CLIENTS,
    MAX_MESSAGE_BYTES,
    OPERATIONS,
    READERS,
    WORKERS,
    ActivateSchedule,
    BeginWait,
    CancelRun,
    ClaimedRuns,
    ClaimNext,
    ClaimRun,
    ConcurrencyLimit,
    CreateKey,
    DeactivateSchedule,
    DeregisterWorker,
    DescribeRun,
    GetRun,
    GetSchedule,
    Heartbeat,
    HistoryUpdate,
    ListKeys,
    ListLimits,
    ListRuns,
    ListSchedules,
    ListVersions,
    ListWorkers,
    OfferSlot,
    PauseRun,
    PauseSchedule,
    RecordHistory,
    RecordTask,
    RegisterWorker,
    ReportProgress,
    Request,
    RequeueRun,
    ResumeRun,
    ResumeSchedule,
    RetryRun,
    RetryRuns,
    RevokeKey,
    RunClaimed,
    ScheduleSpec,
    SendEvent,
    ServedQueue,
    SetLimit,
    Settled,
    StartChild,
    StartRun,
    Subscribe,
    SuspendRun,
    TransitionRun,
    Unsubscribe,
    VersionSpec,
    WaitRun,
    WakeupRun,
    WhoAmI,
    session_url,
)
from aiki.server.operations import HANDLERS, Handlers
from tests._deadline import deadline
from transport.websocket import open_websocket

from .conftest import ORDER_SCHEMA, Api, bearer

P = TypeVar("P")

ORDER = {"id": "o-1", "quantity": 2}


def test_every_declared_operation_has_exactly_one_handler() -> None:
    """The handler table covers the registry, nothing more, and refuses a second binding."""
    assert {op.name for op in HANDLERS} == {op.name for op in OPERATIONS}
    assert len(list(HANDLERS)) == len(OPERATIONS)
    operation = OPERATIONS.named("start_run")
    assert operation is not None
    with pytest.raises(ValueError, match="two handlers"):
        Handlers(HANDLERS, Handlers().on(operation, HANDLERS.of_type(StartRun)))


def test_each_handler_takes_its_request_and_returns_its_reply_type() -> None:
    """A handler's annotations name the operation's request and reply types."""
    for operation in OPERATIONS:
        annotations = HANDLERS.of_type(operation.request_type).__annotations__
        replies = typing.get_args(operation.reply_type) or (operation.reply_type,)
        assert annotations["request"] == operation.request_type.__name__, operation.name
        assert annotations["return"] == " | ".join(reply.__name__ for reply in replies)


def test_every_operation_declares_who_may_call_it() -> None:
    """Each operation is for one of the role sets: workers alone, readers (viewers and up),
    clients (and admins), admins alone, or anyone with a key (whoami); an admin may do
    whatever a client may."""
    for operation in OPERATIONS:
        assert operation.callers in (WORKERS, READERS, CLIENTS, ADMINS, ANYONE), operation.name
        if "client" in operation.callers:
            assert "admin" in operation.callers, operation.name
        if "viewer" in operation.callers:
            assert "client" in operation.callers, operation.name


class _Carriers:
    """Calls operations over HTTP or a session, checking each reply's declared type."""

    def __init__(
        self, http: aiki.Client, session: SessionConnection, reader: SessionConnection
    ) -> None:
        self._http = http
        self._session = session
        self._reader = reader
        self.called: set[str] = set()

    def _check(self, request: Request[Any], reply: object) -> None:
        operation = OPERATIONS.of(request)
        expected = typing.get_args(operation.reply_type) or (operation.reply_type,)
        assert isinstance(reply, expected), (operation.name, reply)
        self.called.add(operation.name)

    async def http(self, request: Request[P]) -> P:
        reply = await self._http.call(request)
        self._check(request, reply)
        return reply

    async def session(self, request: Request[P]) -> P:
        """Over the worker's session."""
        reply = await self._session.call(request)
        self._check(request, reply)
        return reply

    async def reader(self, request: Request[P]) -> P:
        """Over a viewer's session."""
        reply = await self._reader.call(request)
        self._check(request, reply)
        return reply


@deadline(60)
async def test_every_operation_answers_through_a_carrier(api: Api, workflow: str) -> None:
    """A run's whole life, a child, control, schedules and a subscription: each of the
    registry's operations is called at least once and answers with its reply type."""
    version = VersionSpec(workflow=workflow, version="1.0", input_schema=ORDER_SCHEMA,
                          event_schemas={"go": {}})  # fmt: skip
    async with (
        aiki.Client(api.url, api_key=api.keys["admin"], session=False) as http,
        open_websocket(session_url(api.url), max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(api.keys["worker"])) as websocket,
        open_websocket(session_url(api.url), max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(api.keys["viewer"])) as viewing,
        trio.open_nursery() as nursery,
    ):  # fmt: skip
        session = SessionConnection(websocket, api.url)
        reader = SessionConnection(viewing, api.url)
        nursery.start_soon(session.read)
        nursery.start_soon(reader.read)
        call = _Carriers(http, session, reader)

        limit = ConcurrencyLimit(name=f"{workflow}-api", key="id", per_key=3)
        limited = VersionSpec(workflow=workflow, version="2.0", limits=(limit,))
        await call.session(RegisterWorker(worker_id="w1", versions=(version, limited),
                                          concurrency=4))  # fmt: skip
        (listed_limit,) = (await call.http(ListLimits())).limits
        assert (listed_limit.name, listed_limit.per_key) == (limit.name, 3)
        changed = await call.http(SetLimit(name=limit.name, per_key=5))
        assert (changed.per_key, changed.declared_per_key) == (5, 3)
        assert changed.changes[0].changed_by == "test admin"
        run = (await call.http(StartRun(workflow=workflow, version="1.0", input=ORDER))).run
        assert (await call.http(GetRun(run_id=run.id))).status == "queued"
        assert run.id in [found.id for found in (await call.http(ListRuns(workflow=workflow))).runs]
        await call.http(WaitRun(run_id=run.id, statuses=("queued",), timeout_seconds=0))

        claimed = await call.session(ClaimRun(run_id=run.id, worker_id="w1"))
        assert isinstance(claimed, RunClaimed)
        revision = claimed.run.revision
        task = RecordTask(run_id=run.id, revision=revision, address="task:a:0", seq=0, name="a",
                          attempt=1, state="completed", output=1)  # fmt: skip
        await call.session(task)
        await call.session(ReportProgress(run_id=run.id, revision=revision, address="task:b:0",
                                          seq=0, task="b", details={"done": 1}))  # fmt: skip
        assert (await call.session(Heartbeat(worker_id="w1", run_ids=(run.id,)))).held == (run.id,)
        wait = await call.session(BeginWait(run_id=run.id, revision=revision, kind="event",
                                            key="go", seq=0))  # fmt: skip
        assert wait.state == "pending"
        child = (await call.session(StartChild(
            parent_id=run.id, revision=revision, address="child:c", seq=0, workflow=workflow,
            version="1.0", input=ORDER))).run  # fmt: skip
        child_started = Settled(address="child:c", seq=0, position=0)
        history = HistoryUpdate(settled=(child_started,))
        await call.session(RecordHistory(run_id=run.id, revision=revision, history=history))
        suspended = await call.session(SuspendRun(run_id=run.id, revision=revision,
                                                  blocked_on=(("event", "go", 0),)))  # fmt: skip
        assert suspended.status == "awaiting_event"
        sent = await call.http(SendEvent(run_id=run.id, name="go", payload={"n": 1}))
        assert not sent.duplicate
        described = await call.http(DescribeRun(run_id=run.id))
        assert [task.name for task in described.tasks] == ["a"]
        assert [report.task for report in described.progress] == ["b"]
        assert "w1" in [worker.id for worker in (await call.http(ListWorkers())).workers]
        listed_versions = (await call.http(ListVersions(workflow=workflow))).versions
        (served,) = [found for found in listed_versions if found.version == "1.0"]
        (with_limits,) = [found for found in listed_versions if found.version == "2.0"]
        assert with_limits.limits == (attrs.evolve(limit, per_key=5),)  # (as set since)
        assert (served.workers, served.unserved_since) == (("w1",), None)
        assert sum(served.open_runs.values()) == 2  # (the run, its child)

        unused = await call.session(OfferSlot(
            worker_id="w1", queues=(ServedQueue(workflow=workflow, version="1.0"),),
            wait_seconds=0.01))  # fmt: skip
        assert unused.claims == ()  # no start meanwhile
        pulled: ClaimedRuns = await call.session(ClaimNext(worker_id="w1", limit=5))
        again = {claim.run.id: claim.run.revision for claim in pulled.claims}
        assert run.id in again
        (resumed,) = [claim for claim in pulled.claims if claim.run.id == run.id]
        assert resumed.settled == (child_started,), "a claim carries the order steps settled in"
        done = await call.session(TransitionRun(run_id=run.id, revision=again[run.id],
                                                status="completed", output=2))  # fmt: skip
        assert done.status == "completed"

        assert (await call.http(PauseRun(run_id=child.id))).status == "paused"
        assert (await call.http(ResumeRun(run_id=child.id))).status == "queued"
        assert (await call.http(WakeupRun(run_id=child.id))).sleeps == 0
        assert (await call.http(CancelRun(run_id=child.id))).affected == (child.id,)

        other = (await call.http(StartRun(workflow=workflow, version="1.0", input=ORDER))).run
        await call.session(ClaimRun(run_id=other.id, worker_id="w1"))
        assert (await call.http(RequeueRun(run_id=other.id))).status == "queued"
        for retry in (RetryRun(run_id=other.id), RetryRuns(workflow=workflow)):
            claim = await call.session(ClaimRun(run_id=other.id, worker_id="w1"))
            assert isinstance(claim, RunClaimed)
            failed = await call.session(TransitionRun(
                run_id=other.id, revision=claim.run.revision, status="failed",
                error=ErrorInfo(type="Bug", message="fixed later")))  # fmt: skip
            assert failed.status == "failed"
            assert (await call.http(retry)).affected == (other.id,)
        watched = await call.reader(Subscribe(run_ids=(other.id,)))
        assert [found.id for found in watched.runs] == [other.id]
        await call.reader(Unsubscribe(subscription=watched.subscription))
        assert (await call.reader(WhoAmI())).role == "viewer"

        created = await call.http(CreateKey(role="client", namespace="default", name="ops"))
        assert created.info.prefix in [key.prefix for key in (await call.http(ListKeys())).keys]
        assert (await call.http(RevokeKey(prefix=created.info.prefix))).revoked_at is not None

        activated = await call.http(ActivateSchedule(
            workflow=workflow, version="1.0", input=ORDER,
            spec=ScheduleSpec(every_seconds=3600.0)))  # fmt: skip
        schedule_id = activated.schedule.id
        details = await call.http(GetSchedule(schedule_id=schedule_id, upcoming=2))
        assert len(details.upcoming) == 2
        listed = await call.http(ListSchedules(workflow=workflow))
        assert [found.id for found in listed.schedules] == [schedule_id]
        assert (await call.http(PauseSchedule(schedule_id=schedule_id))).status == "paused"
        assert (await call.http(ResumeSchedule(schedule_id=schedule_id))).status == "active"
        deactivated = await call.http(DeactivateSchedule(schedule_id=schedule_id))
        assert deactivated.status == "deactivated"

        gone = await call.session(DeregisterWorker(worker_id="w1"))
        assert (gone.worker_id, gone.released) == ("w1", 0)  # it holds no run by now
        assert call.called == {operation.name for operation in OPERATIONS}
        await websocket.aclose()
        await viewing.aclose()
        nursery.cancel_scope.cancel()


@deadline(30)
async def test_session_only_operations_are_refused_over_http(api: Api) -> None:
    """subscribe over HTTP is a 400 that points at the session, not a 500 or a hang."""
    status, body = await api.call("subscribe", {"run_ids": []})
    assert status == 400
    assert "/api/v1/session" in body["error"]["message"]
