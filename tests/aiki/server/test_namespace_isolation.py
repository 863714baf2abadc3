"""A key of one namespace sees nothing of another and changes nothing of it, through
every operation: namespace B has a worker, a suspended run with a child, an event wait,
a schedule and keys; namespace A's viewer, client, worker and admin keys call each of
the registry's operations against B's IDs, names and reference IDs. Every call is
answered as if B's things did not exist, and afterwards B's rows are as they were."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import psycopg
import pytest
import trio

import aiki
from aiki.client import SessionConnection
from aiki.protocol import (
    MAX_MESSAGE_BYTES,
    OPERATIONS,
    ActivateSchedule,
    BeginWait,
    CancelRun,
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
    StartOptions,
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
from aiki.server.store import keys
from tests._deadline import deadline
from transport.postgres import Transaction
from transport.websocket import open_websocket

from .conftest import ORDER_SCHEMA, Api, bearer

A, B = "ns-a", "ns-b"
ORDER = {"id": "o-1", "quantity": 2}
UNSEEN = (aiki.NotFoundError, aiki.WorkflowNotFoundError, aiki.ForbiddenError)
"""How a call about something of another namespace is answered: as for nothing."""

B_STATE = {
    "runs": "SELECT id, status, revision, worker_id, stop_reason FROM aiki_runs"
            " WHERE namespace = %(ns)s ORDER BY id",
    "history": "SELECT count(*) FROM aiki_transitions t JOIN aiki_runs r ON r.id = t.run_id"
               " WHERE r.namespace = %(ns)s",
    "waits": "SELECT w.run_id, w.kind, w.key, w.seq, w.state FROM aiki_waits w"
             " JOIN aiki_runs r ON r.id = w.run_id WHERE r.namespace = %(ns)s ORDER BY 1, 2, 3, 4",
    "tasks": "SELECT count(*) FROM aiki_tasks t JOIN aiki_runs r ON r.id = t.run_id"
             " WHERE r.namespace = %(ns)s",
    "schedules": "SELECT id, status, updated_at FROM aiki_schedules WHERE namespace = %(ns)s",
    "workers": "SELECT id, alive FROM aiki_workers WHERE namespace = %(ns)s",
    "keys": "SELECT prefix, revoked_at FROM aiki_api_keys WHERE namespace = %(ns)s ORDER BY 1",
    "versions": "SELECT workflow, version FROM aiki_workflow_versions WHERE namespace = %(ns)s",
}  # fmt: skip


def _state(pg_url: str, namespace: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(pg_url) as connection:
        return {name: connection.execute(query, {"ns": namespace}).fetchall()
                for name, query in B_STATE.items()}  # fmt: skip


def _keys(pg_url: str, namespace: str) -> dict[str, str]:
    made = {}
    with psycopg.connect(pg_url, autocommit=True) as connection:
        tx = Transaction(connection)
        for role in ("viewer", "client", "worker", "admin"):
            made[role], _ = keys.create(tx, role=role, namespace=namespace,
                                        name=f"{namespace} {role}", expires_at=None)  # fmt: skip
    return made


class _Calls:
    """Calls as namespace A, each answered as if B's things did not exist."""

    def __init__(self) -> None:
        self.called: set[str] = set()

    def note(self, request: Request[Any]) -> None:
        """Count ``request``'s operation as called."""
        self.called.add(OPERATIONS.of(request).name)

    async def unseen(self, call: Any, request: Request[Any]) -> None:
        """``request`` is refused as for a thing that does not exist."""
        self.note(request)
        with pytest.raises(UNSEEN):
            await call(request)

    async def answered(self, call: Any, request: Request[Any]) -> Any:
        self.note(request)
        result: Awaitable[Any] = call(request)
        return await result


@deadline(90)
async def test_a_key_of_one_namespace_sees_and_changes_nothing_of_another(
    api: Api, pg_url: str, workflow: str
) -> None:
    key_a, key_b = _keys(pg_url, A), _keys(pg_url, B)
    version = VersionSpec(workflow=workflow, version="1.0", input_schema=ORDER_SCHEMA,
                          event_schemas={"go": {}})  # fmt: skip
    url = session_url(api.url)
    async with (
        aiki.Client(api.url, api_key=key_b["client"], session=False) as client_b,
        aiki.Client(api.url, api_key=key_a["client"], session=False) as client_a,
        aiki.Client(api.url, api_key=key_a["admin"], session=False) as admin_a,
        open_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(key_b["worker"])) as socket_b,
        open_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(key_a["worker"])) as socket_a,
        open_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(key_a["viewer"])) as viewing_a,
        open_websocket(url, max_message_bytes=MAX_MESSAGE_BYTES,
                       headers=bearer(key_b["viewer"])) as viewing_b,
        trio.open_nursery() as nursery,
    ):  # fmt: skip
        worker_b, worker_a = (
            SessionConnection(socket_b, api.url),
            SessionConnection(socket_a, api.url),
        )
        viewer_a = SessionConnection(viewing_a, api.url)
        viewer_b = SessionConnection(viewing_b, api.url)
        for connection in (worker_b, worker_a, viewer_a, viewer_b):
            nursery.start_soon(connection.read)
        calls = _Calls()
        # Viewers of both namespaces follow the workflow's runs before B's work begins.
        following = Subscribe(workflow=workflow)
        calls.note(following)
        watched_a, updates_a = await viewer_a.subscribe(following)
        _, updates_b = await viewer_b.subscribe(following)

        # Namespace B: a worker, a run suspended on an event with a child, a schedule.
        limited = VersionSpec(workflow=workflow, version="2.0",
                              limits=(ConcurrencyLimit(name="b-api", per_key=2),))  # fmt: skip
        await worker_b.call(RegisterWorker(worker_id="wb", versions=(version, limited),
                                           concurrency=4))  # fmt: skip
        start_b = StartRun(workflow=workflow, version="1.0", input=ORDER,
                           options=StartOptions(reference_id="ref-1"))  # fmt: skip
        run_b = (await client_b.call(start_b)).run
        claimed = await worker_b.call(ClaimRun(run_id=run_b.id, worker_id="wb"))
        assert isinstance(claimed, RunClaimed)
        revision = claimed.run.revision
        await worker_b.call(BeginWait(run_id=run_b.id, revision=revision, kind="event",
                                      key="go", seq=0))  # fmt: skip
        child_b = (await worker_b.call(StartChild(
            parent_id=run_b.id, revision=revision, address="child:c", seq=0,
            workflow=workflow, version="1.0", input=ORDER))).run  # fmt: skip
        suspended = await worker_b.call(SuspendRun(run_id=run_b.id, revision=revision,
                                                   blocked_on=(("event", "go", 0),)))  # fmt: skip
        assert suspended.status == "awaiting_event"
        while not any(update.run_id == run_b.id and update.status == "awaiting_event"
                      for update in (await updates_b.get()).updates):  # fmt: skip
            pass  # B's viewer sees B's run suspend: every update of it was pushed by now
        assert updates_a.get_nowait() is None, "A's viewer was pushed B's updates"
        schedule_b = (await client_b.call(ActivateSchedule(
            workflow=workflow, version="1.0", input=ORDER,
            spec=ScheduleSpec(every_seconds=3600.0), reference_id="sched-1"))).schedule  # fmt: skip
        before = await trio.to_thread.run_sync(_state, pg_url, B)
        assert len(before["runs"]) == 2
        assert before["waits"]
        assert before["schedules"]

        http, admin = client_a.call, admin_a.call
        # Runs: reads, waits, control, events: B's run does not exist for A.
        run_requests: tuple[Request[Any], ...] = (
                        GetRun(run_id=run_b.id), DescribeRun(run_id=run_b.id),
                        WaitRun(run_id=run_b.id, statuses=("completed",), timeout_seconds=0),
                        SendEvent(run_id=run_b.id, name="go", payload={"n": 1}),
                        PauseRun(run_id=run_b.id), ResumeRun(run_id=child_b.id),
                        CancelRun(run_id=run_b.id), WakeupRun(run_id=run_b.id),
                        RequeueRun(run_id=child_b.id), RetryRun(run_id=run_b.id),
                        GetRun(workflow=workflow, version="1.0", reference_id="ref-1"))  # fmt: skip
        for request in run_requests:
            await calls.unseen(http, request)
        # B's version is not registered for A: starts and schedules of it are refused.
        await calls.unseen(http, StartRun(workflow=workflow, version="1.0", input=ORDER,
                                          options=StartOptions(reference_id="ref-1")))  # fmt: skip
        await calls.unseen(http, ActivateSchedule(workflow=workflow, version="1.0", input=ORDER,
                                                  spec=ScheduleSpec(every_seconds=60.0),
                                                  reference_id="sched-1"))  # fmt: skip
        listed = await calls.answered(http, ListRuns())
        assert {run.id for run in listed.runs} & {run_b.id, child_b.id} == set()
        for found in (ListRuns(reference_id="ref-1"), ListRuns(parent_id=run_b.id)):
            assert (await calls.answered(http, found)).runs == ()
        assert (await calls.answered(http, RetryRuns(workflow=workflow))).affected == ()
        workers = await calls.answered(http, ListWorkers())
        assert "wb" not in {worker.id for worker in workers.workers}
        versions = await calls.answered(http, ListVersions(workflow=workflow))
        assert versions.versions == ()  # (B's version, B's runs: not A's)
        # Schedules.
        schedule_requests: tuple[Request[Any], ...] = (GetSchedule(schedule_id=schedule_b.id),
                        GetSchedule(reference_id="sched-1"),
                        PauseSchedule(schedule_id=schedule_b.id),
                        ResumeSchedule(schedule_id=schedule_b.id),
                        DeactivateSchedule(schedule_id=schedule_b.id))  # fmt: skip
        for request in schedule_requests:
            await calls.unseen(http, request)
        assert (await calls.answered(http, ListSchedules())).schedules == ()
        # Concurrency limits: B's are not A's to see or change.
        assert (await calls.answered(http, ListLimits())).limits == ()
        await calls.unseen(http, ListLimits(name="b-api"))
        await calls.unseen(admin, SetLimit(name="b-api", per_key=100))
        # Keys: A's admin lists A's keys only, and cannot touch or make B's.
        listed_keys = await calls.answered(admin, ListKeys())
        assert {key.namespace for key in listed_keys.keys} == {A}
        b_prefixes = [row[0] for row in before["keys"]]
        await calls.unseen(admin, RevokeKey(prefix=b_prefixes[0]))
        await calls.unseen(admin, CreateKey(role="client", namespace=B, name="intruder"))
        assert (await calls.answered(admin, WhoAmI())).namespace == A
        # Live updates: B's runs by ID are runs that do not exist.
        await calls.unseen(viewer_a.call, Subscribe(run_ids=(run_b.id, child_b.id)))
        await calls.answered(viewer_a.call, Unsubscribe(subscription=watched_a.subscription))
        # A's worker: serves the same workflow name in A; B's runs are not its to claim
        # or write, its pulls and offers never bring B's runs, B's worker is not its own.
        session = worker_a.call
        await calls.answered(session, RegisterWorker(worker_id="wa", versions=(version,),
                                                     concurrency=4))  # fmt: skip
        await calls.unseen(session, ClaimRun(run_id=child_b.id, worker_id="wa"))
        held = await calls.answered(session, Heartbeat(worker_id="wa",
                                                       run_ids=(run_b.id, child_b.id)))  # fmt: skip
        assert held.held == ()
        worker_requests: tuple[Request[Any], ...] = (
            RecordTask(run_id=run_b.id, revision=revision + 1, address="task:a:0", seq=0,
                       name="a", attempt=1, state="completed", output=1),
            ReportProgress(run_id=run_b.id, revision=revision + 1, address="task:a:0", seq=0,
                           task="a", details={}),
            BeginWait(run_id=run_b.id, revision=revision + 1, kind="sleep", key="s", seq=0,
                      seconds=1.0),
            StartChild(parent_id=run_b.id, revision=revision + 1, address="child:d", seq=0,
                       workflow=workflow, version="1.0", input=ORDER),
            RecordHistory(run_id=run_b.id, revision=revision + 1,
                          history=HistoryUpdate(settled=(Settled(address="child:c", seq=0,
                                                                 position=0),))),
            SuspendRun(run_id=run_b.id, revision=revision + 1, blocked_on=(("event", "go", 0),)),
            TransitionRun(run_id=run_b.id, revision=revision + 1, status="completed", output=2),
            DeregisterWorker(worker_id="wb"),
        )  # fmt: skip
        for request in worker_requests:
            await calls.unseen(session, request)
        pulled = await calls.answered(session, ClaimNext(worker_id="wa", limit=10))
        assert pulled.claims == ()
        offered = await calls.answered(session, OfferSlot(
            worker_id="wa", queues=(ServedQueue(workflow=workflow, version="1.0"),),
            wait_seconds=0.01))  # fmt: skip
        assert offered.claims == ()
        await calls.unseen(session, RegisterWorker(worker_id="wb", versions=(version,),
                                                   concurrency=1))  # fmt: skip

        assert calls.called == {operation.name for operation in OPERATIONS}
        after = await trio.to_thread.run_sync(_state, pg_url, B)
        assert after == before, "namespace A changed something of namespace B"
        for websocket in (socket_a, socket_b, viewing_a, viewing_b):
            await websocket.aclose()
        nursery.cancel_scope.cancel()
