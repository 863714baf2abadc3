"""The server's operations: one typed request and reply per operation, on two carriers.

- HTTP: ``POST /api/v1/<operation>`` with the request as a JSON object; the reply is the
  JSON reply, or an error ``{"error": {"code", "message", "errors"}}`` with a 4xx/5xx.
- WebSocket (``/api/v1/session``): frames ``{"id": n, "op": "<operation>", "body": {...}}``
  answered by ``{"id": n, "ok": {...}}`` or ``{"id": n, "error": {...}}``, in any order.

User payloads (inputs, outputs) are fields typed ``object``: JSON passed through as is.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import attrs

from transport import WireCodec

from ._replay import RecordedChild, RecordedTask, RecordedWait
from ._states import RunStatus
from .errors import ErrorInfo
from .retry import RetryPolicy

ConflictPolicy = Literal["error", "return_existing"]

MAX_WAIT_SECONDS: Final = 60.0
"""Longest a single ``wait_run`` call is held open by the server."""


@attrs.frozen(kw_only=True)
class StartOptions:
    """Options of one start: idempotency, routing and retry override."""

    reference_id: str | None = None
    conflict: ConflictPolicy = "error"
    """With a known reference ID: ``error`` if the input differs (same input returns the
    existing run), or ``return_existing`` whatever the input."""
    pool: str | None = None
    retry: RetryPolicy | None = None
    """Overrides the workflow version's retry policy for this run."""
    start_delay_seconds: float | None = None
    """Start ``scheduled``; queue the run this many seconds from now."""
    start_at: dt.datetime | None = None
    """Start ``scheduled``; queue the run at this time."""
    timeout_seconds: float | None = None
    """Fail the run (``run_timeout``) unless it ends within this many seconds of its start."""


@attrs.frozen(kw_only=True)
class RunInfo:
    """A run as the server knows it."""

    id: str
    workflow: str
    version: str
    status: RunStatus
    revision: int
    input: object
    output: object = None
    error: ErrorInfo | None = None
    reference_id: str | None = None
    pool: str | None = None
    attempt: int = 1
    retry: RetryPolicy | None = None
    parent_id: str | None = None
    deadline_at: dt.datetime | None = None
    wake_at: dt.datetime | None = None
    stop_reason: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    schedule_id: str | None = None
    """The schedule that started the run, if one did."""
    occurrence: dt.datetime | None = None
    """The occurrence (its nominal time) of ``schedule_id`` the run was started for."""


# -- requests ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StartRun:
    """Create a run of a registered workflow version and queue it."""

    workflow: str
    version: str
    input: object = None
    options: StartOptions = StartOptions()


@attrs.frozen(kw_only=True)
class GetRun:
    """Look a run up by ``run_id``, or by ``workflow`` + ``version`` + ``reference_id``."""

    run_id: str | None = None
    workflow: str | None = None
    version: str | None = None
    reference_id: str | None = None


@attrs.frozen(kw_only=True)
class ListRuns:
    """List runs, newest first, optionally filtered; page with ``cursor``."""

    workflow: str | None = None
    version: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    limit: int = 50
    cursor: str | None = None


@attrs.frozen(kw_only=True)
class WaitRun:
    """Reply once the run is in one of ``statuses`` (or terminal), or after ``timeout_seconds``."""

    run_id: str
    statuses: tuple[RunStatus, ...]
    timeout_seconds: float = 30.0


@attrs.frozen(kw_only=True)
class VersionSpec:
    """One workflow version a worker serves, with the JSON Schemas of its input and events."""

    workflow: str
    version: str
    input_schema: object = None
    event_schemas: dict[str, object] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class RegisterWorker:
    """A worker announces itself and the versions (and pools) it serves."""

    worker_id: str
    versions: tuple[VersionSpec, ...]
    pools: tuple[str | None, ...] = (None,)
    concurrency: int = 1


@attrs.frozen(kw_only=True)
class ClaimRun:
    """Take a queued run for execution; the claim bumps its revision."""

    run_id: str
    worker_id: str


TaskRecordState = Literal["completed", "failed", "attempt_failed"]


@attrs.frozen(kw_only=True)
class RecordTask:
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
class ReportProgress:
    """A running task's progress (any JSON value; the latest one is kept), fenced."""

    run_id: str
    revision: int
    address: str
    seq: int
    task: str
    details: object = None


@attrs.frozen(kw_only=True)
class ProgressReported:
    """Reply to `ReportProgress`."""

    run_id: str


@attrs.frozen(kw_only=True)
class TransitionRun:
    """Move a claimed run to ``status`` (completed, failed, awaiting_retry, queued), fenced."""

    run_id: str
    revision: int
    status: RunStatus
    output: object = None
    error: ErrorInfo | None = None
    retry_delay_seconds: float | None = None
    """For ``awaiting_retry``: when the server should queue the run again."""
    reason: str | None = None
    tasks: tuple[RecordTask, ...] = ()
    """Task outcomes stored in the same transaction, before the move: a task completed
    just before the handler returned rides with the completion (one write, not two)."""


WaitKind = Literal["sleep", "event", "child"]


@attrs.frozen(kw_only=True)
class BeginWait:
    """Record that the run reached a wait (or read its state if it was recorded before).

    ``seconds`` is a sleep's duration, or an event/child wait's timeout (None: none).
    """

    run_id: str
    revision: int
    kind: WaitKind
    key: str
    seq: int
    seconds: float | None = None


@attrs.frozen(kw_only=True)
class SuspendRun:
    """Every branch of the run is waiting: free the worker slot until a wait is satisfied.

    ``blocked_on`` names the waits (kind, key, seq) the branches block on; if one of them
    was resolved meanwhile, the server queues the run again instead.
    """

    run_id: str
    revision: int
    blocked_on: tuple[tuple[WaitKind, str, int], ...] = ()


@attrs.frozen(kw_only=True)
class SendEvent:
    """Deliver an event to a run; a repeated ``reference_id`` is ignored."""

    run_id: str
    name: str
    payload: object = None
    reference_id: str | None = None


@attrs.frozen(kw_only=True)
class StartChild:
    """Start a child run of ``parent_id`` for the parent's step ``address``#``seq`` (fenced)."""

    parent_id: str
    revision: int
    address: str
    seq: int
    workflow: str
    version: str
    input: object = None
    options: StartOptions = StartOptions()


@attrs.frozen(kw_only=True)
class CancelRun:
    """Cancel a run and all its non-terminal descendants."""

    run_id: str
    reason: str = "cancelled"


@attrs.frozen(kw_only=True)
class PauseRun:
    """Pause a run: it stops (if running) and is not started again until resumed."""

    run_id: str
    reason: str = "paused"


@attrs.frozen(kw_only=True)
class ResumeRun:
    """Resume a paused run (it is queued again)."""

    run_id: str


@attrs.frozen(kw_only=True)
class WakeupRun:
    """End the run's pending sleeps now (they report being cut short)."""

    run_id: str


@attrs.frozen(kw_only=True)
class ClaimNext:
    """Claim up to ``limit`` queued runs this worker serves (the path while Redis is down)."""

    worker_id: str
    limit: int = 1


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A worker is alive and holds these runs (their claims are refreshed)."""

    worker_id: str
    run_ids: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RequeueRun:
    """Release a run's claim and queue it again (recovery); the revision bump fences the owner."""

    run_id: str
    reason: str = "requeued"


# -- replies -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RunStarted:
    """Reply to `StartRun`: the run, and whether this call created it."""

    run: RunInfo
    created: bool


@attrs.frozen(kw_only=True)
class RunPage:
    """Reply to `ListRuns`."""

    runs: tuple[RunInfo, ...]
    next_cursor: str | None = None


@attrs.frozen(kw_only=True)
class WorkerRegistered:
    """Reply to `RegisterWorker`."""

    worker_id: str


@attrs.frozen(kw_only=True)
class RunClaimed:
    """Reply to `ClaimRun`: the run (with its new revision) and its recorded history."""

    run: RunInfo
    tasks: tuple[RecordedTask, ...] = ()
    waits: tuple[RecordedWait, ...] = ()
    children: tuple[RecordedChild, ...] = ()
    task_attempts: tuple[tuple[str, int, int], ...] = ()
    """Failed attempts so far of tasks without a final outcome: (address, seq, attempts)."""


@attrs.frozen(kw_only=True)
class ClaimedRuns:
    """Reply to `ClaimNext`: the runs now held by the worker (possibly none)."""

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
class RunTransitioned:
    """Reply to `TransitionRun` and `RequeueRun`."""

    run_id: str
    status: RunStatus
    revision: int


@attrs.frozen(kw_only=True)
class EventSent:
    """Reply to `SendEvent`; ``duplicate`` if its reference ID was seen before."""

    run_id: str
    name: str
    seq: int
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class RunsStopped:
    """Reply to `CancelRun` / `PauseRun`: the runs that changed, the requested one first."""

    run_id: str
    status: RunStatus
    affected: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class WokenUp:
    """Reply to `WakeupRun`: how many sleeps were cut short."""

    run_id: str
    sleeps: int


@attrs.frozen(kw_only=True)
class StopRun:
    """Server push to a worker: stop executing this run (it was cancelled, paused, timed out)."""

    run_id: str
    reason: str


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


@attrs.frozen(kw_only=True)
class ErrorBody:
    """An error reply: ``code`` names an `aiki.errors` class."""

    code: str
    message: str
    errors: tuple[str, ...] = ()
    run_id: str | None = None


ERROR_BODY: Final = WireCodec[ErrorBody](ErrorBody)
PUSH: Final = WireCodec[StopRun](StopRun)
