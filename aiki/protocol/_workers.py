"""Wire types of workers: registration, claims, task records, waits, heartbeats, pushes.

A worker executes runs it claimed; every write about a run carries the revision its
claim gave it, and the server applies the write only while that revision is current
(fencing).
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from ..errors import ErrorInfo
from ._history import RecordedChild, RecordedTask, RecordedWait, Settled
from ._limits import ConcurrencyLimit
from ._operation import WORKERS, Request, declare
from ._runs import RunInfo, RunStarted, RunTransitioned, StartOptions
from ._states import RunStatus
from ._streams import MAX_SHARDS

TaskRecordState = Literal["completed", "failed", "attempt_failed"]
WaitKind = Literal["sleep", "event", "child"]


@attrs.frozen(kw_only=True)
class VersionSpec:
    """One workflow version a worker serves, with the JSON Schemas of its input and events."""

    workflow: str
    version: str
    input_schema: object = None
    event_schemas: dict[str, object] = attrs.Factory(dict)
    limits: tuple[ConcurrencyLimit, ...] = ()
    """The concurrency limits its runs take a slot of (part of the version: a version
    registered again must name the same ones, with the same keys)."""


# -- replies and pushes ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RedisGrant:
    """Redis credentials the server gave a worker: a Redis user that reaches only the
    streams of the worker's namespace, and only with the commands a worker uses. They
    expire ``seconds`` after they were given unless renewed (each renewal gives a new
    password: the old one stops working for new connections)."""

    url: str
    """Where Redis is (``redis://`` or ``redis+cluster://``, with no user or password)."""
    username: str
    password: str = attrs.field(repr=False)
    seconds: float
    """How long they last without a renewal (`Heartbeat.renew_redis`)."""


@attrs.frozen(kw_only=True)
class WorkerRegistered:
    """Reply to `RegisterWorker`."""

    worker_id: str
    namespace: str = "default"
    """The namespace the worker serves (its key's): its runs, and the streams it reads."""
    stream_shards: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_SHARDS)]
    )
    """Sub-streams per queue the server publishes to (``aiki server --stream-shards``):
    the worker reads every one (bounded: a reply naming more is refused when decoded)."""
    redis: RedisGrant | None = None
    """The worker's Redis credentials, when it asked for them (`RegisterWorker`)."""


@attrs.frozen(kw_only=True)
class RunClaimed:
    """Reply to `ClaimRun`: the run (with its new revision) and its recorded history."""

    run: RunInfo
    tasks: tuple[RecordedTask, ...] = ()
    waits: tuple[RecordedWait, ...] = ()
    children: tuple[RecordedChild, ...] = ()
    task_attempts: tuple[tuple[str, int, int], ...] = ()
    """Failed attempts so far of tasks without a final outcome: (address, seq, attempts)."""
    settled: tuple[Settled, ...] = ()
    """Where steps settled in earlier executions, by position (replay delivers recorded
    outcomes in this order)."""


@attrs.frozen(kw_only=True)
class ClaimedRuns:
    """Reply to `ClaimNext` and `OfferSlot`: the runs now held by the worker (possibly none)."""

    claims: tuple[RunClaimed, ...] = ()


@attrs.frozen(kw_only=True)
class ClaimRejected:
    """Reply to `ClaimRun`: the run is not claimable (already taken, terminal, ...)."""

    run_id: str
    status: RunStatus
    reason: str


@attrs.frozen(kw_only=True)
class TaskRecorded:
    """Reply to `RecordTask`."""

    address: str
    seq: int


@attrs.frozen(kw_only=True)
class ProgressReported:
    """Reply to `ReportProgress`."""

    run_id: str


@attrs.frozen(kw_only=True)
class HeartbeatAck:
    """Reply to `Heartbeat`.

    Attributes:
        worker_id: the worker.
        held: the runs of the heartbeat still claimed by this worker (their claims were
            refreshed); a run missing here was released and must stop on this worker.
        lease_seconds: how long a refreshed claim holds without another heartbeat.
    """

    worker_id: str
    held: tuple[str, ...] = ()
    lease_seconds: float | None = None
    redis: RedisGrant | None = None
    """New Redis credentials, when the heartbeat asked for them (``renew_redis``)."""


@attrs.frozen(kw_only=True)
class StopRun:
    """Server push to a worker: stop executing this run (it was cancelled, paused, timed out)."""

    run_id: str
    reason: str


@attrs.frozen(kw_only=True)
class WorkerDeregistered:
    """Reply to `DeregisterWorker`: ``released`` runs it still held were queued again."""

    worker_id: str
    released: int = 0


# -- requests -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterWorker(Request[WorkerRegistered]):
    """A worker announces itself and the versions (and pools) it serves.

    A worker ID belongs to the process that registered it while that worker is alive:
    another registration of it is refused (`aiki.ConflictError`) unless it carries the
    same ``incarnation``, a secret the worker process chose at start (the same process,
    reconnecting on a new session). Without one, the session's own stands for it: the
    ID can then be registered again on that session only, until the worker is gone.
    """

    worker_id: str
    versions: tuple[VersionSpec, ...]
    pools: tuple[str | None, ...] = (None,)
    concurrency: int = 1
    incarnation: str | None = None
    redis_credentials: bool = False
    """Ask for Redis credentials of the server's making (`RedisGrant`), for a worker
    given no Redis URL of its own."""


@attrs.frozen(kw_only=True)
class ClaimRun(Request[RunClaimed | ClaimRejected]):
    """Take a queued run for execution; the claim bumps its revision."""

    run_id: str
    worker_id: str


@attrs.frozen(kw_only=True)
class RecordTask(Request[TaskRecorded]):
    """Record a task attempt's outcome (``completed``/``failed`` are final), fenced by revision."""

    run_id: str
    revision: int
    address: str
    seq: int
    name: str
    attempt: int
    state: TaskRecordState
    input: object = None
    output: object = None
    error: ErrorInfo | None = None
    duration_seconds: float | None = None
    """How long the attempt's body ran (for the server's task latency histogram)."""


@attrs.frozen(kw_only=True)
class ReportProgress(Request[ProgressReported]):
    """A running task's progress (any JSON value; the latest one is kept), fenced."""

    run_id: str
    revision: int
    address: str
    seq: int
    task: str
    details: object = None


@attrs.frozen(kw_only=True)
class HistoryUpdate:
    """What an execution adds to its run's history, stored (in the same transaction)
    before the request that carries it: final task outcomes not sent yet, and the steps
    that settled since the last write, in order. Steps the handler gave up that were
    pending waits are withdrawn: they take no event and wake nothing."""

    tasks: tuple[RecordTask, ...] = ()
    settled: tuple[Settled, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tasks or self.settled)


@attrs.frozen(kw_only=True)
class HistoryRecorded:
    """Reply to `RecordHistory`."""

    run_id: str


@attrs.frozen(kw_only=True)
class RecordHistory(Request[HistoryRecorded]):
    """Store what an execution added to its run's history (fenced by revision)."""

    run_id: str
    revision: int
    history: HistoryUpdate = attrs.Factory(HistoryUpdate)


@attrs.frozen(kw_only=True)
class TransitionRun(Request[RunTransitioned]):
    """Move a claimed run to ``status`` (completed, failed, awaiting_retry, queued), fenced."""

    run_id: str
    revision: int
    status: RunStatus
    output: object = None
    error: ErrorInfo | None = None
    retry_delay_seconds: float | None = None
    """For ``awaiting_retry``: when the server should queue the run again."""
    reason: str | None = None
    history: HistoryUpdate = attrs.Factory(HistoryUpdate)
    """Stored in the same transaction, before the move: a task completed just before the
    handler returned rides with the completion (one write, not two)."""


@attrs.frozen(kw_only=True)
class BeginWait(Request[RecordedWait]):
    """Record that the run reached a wait (or read its state if it was recorded before).

    ``seconds`` is a sleep's duration, or an event/child wait's timeout (None: none).
    """

    run_id: str
    revision: int
    kind: WaitKind
    key: str
    seq: int
    seconds: float | None = None
    history: HistoryUpdate = attrs.Factory(HistoryUpdate)


@attrs.frozen(kw_only=True)
class SuspendRun(Request[RunTransitioned]):
    """Every branch of the run is waiting: free the worker slot until a wait is satisfied.

    ``blocked_on`` names the waits (kind, key, seq) the branches block on. The run is
    suspended only if every one of them is pending (each can wake it); if one was resolved
    or withdrawn meanwhile, or none is named, the server queues the run again instead.
    """

    run_id: str
    revision: int
    blocked_on: tuple[tuple[WaitKind, str, int], ...] = ()
    history: HistoryUpdate = attrs.Factory(HistoryUpdate)


@attrs.frozen(kw_only=True)
class StartChild(Request[RunStarted]):
    """Start a child run of ``parent_id`` for the parent's step ``address``#``seq`` (fenced)."""

    parent_id: str
    revision: int
    address: str
    seq: int
    workflow: str
    version: str
    input: object = None
    options: StartOptions = attrs.Factory(StartOptions)
    history: HistoryUpdate = attrs.Factory(HistoryUpdate)


@attrs.frozen(kw_only=True)
class ClaimNext(Request[ClaimedRuns]):
    """Claim up to ``limit`` queued runs this worker serves (the path while Redis is down)."""

    worker_id: str
    limit: int = 1


@attrs.frozen(kw_only=True)
class ServedQueue:
    """Runs a worker serves: one workflow version, in one pool (None: runs without a pool)."""

    workflow: str
    version: str
    pool: str | None = None


@attrs.frozen(kw_only=True)
class OfferSlot(Request[ClaimedRuns]):
    """Offer one free execution slot for the next run started on this server that the
    worker serves (eager dispatch): the start's own transaction claims the run for the
    worker, and the reply carries that claim; after ``wait_seconds`` without such a start,
    the reply carries none. A run dispatched this way takes no stream entry and no claim
    of its own."""

    worker_id: str
    queues: tuple[ServedQueue, ...]
    wait_seconds: float


@attrs.frozen(kw_only=True)
class Heartbeat(Request[HeartbeatAck]):
    """A worker is alive and holds these runs (their claims are refreshed)."""

    worker_id: str
    run_ids: tuple[str, ...] = ()
    renew_redis: bool = False
    """Renew the worker's Redis credentials (`RedisGrant`): the reply carries new ones."""


@attrs.frozen(kw_only=True)
class DeregisterWorker(Request[WorkerDeregistered]):
    """A worker stops (gracefully): it is no longer alive, and any run it still holds is
    queued again at once (not after the claim timeout)."""

    worker_id: str


REGISTER_WORKER: Final = declare("register_worker", RegisterWorker, callers=WORKERS)
DEREGISTER_WORKER: Final = declare("deregister_worker", DeregisterWorker, callers=WORKERS)
CLAIM_RUN: Final = declare("claim_run", ClaimRun, callers=WORKERS)
RECORD_TASK: Final = declare("record_task", RecordTask, callers=WORKERS)
RECORD_HISTORY: Final = declare("record_history", RecordHistory, callers=WORKERS)
REPORT_PROGRESS: Final = declare("report_progress", ReportProgress, callers=WORKERS)
TRANSITION_RUN: Final = declare("transition_run", TransitionRun, callers=WORKERS)
BEGIN_WAIT: Final = declare("begin_wait", BeginWait, callers=WORKERS)
SUSPEND_RUN: Final = declare("suspend_run", SuspendRun, callers=WORKERS)
START_CHILD: Final = declare("start_child", StartChild, callers=WORKERS)
CLAIM_NEXT: Final = declare("claim_next", ClaimNext, callers=WORKERS)
OFFER_SLOT: Final = declare("offer_slot", OfferSlot, callers=WORKERS)
HEARTBEAT: Final = declare("heartbeat", Heartbeat, callers=WORKERS)

OPERATIONS: Final = (
    REGISTER_WORKER, DEREGISTER_WORKER, CLAIM_RUN, RECORD_TASK, RECORD_HISTORY, REPORT_PROGRESS,
    TRANSITION_RUN,
    BEGIN_WAIT, SUSPEND_RUN, START_CHILD, CLAIM_NEXT, OFFER_SLOT, HEARTBEAT,
)  # fmt: skip
"""The operations of workers."""
