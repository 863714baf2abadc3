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

from ._replay import RecordedTask
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
    created_at: dt.datetime
    updated_at: dt.datetime


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
    """One workflow version a worker serves, with its input's JSON Schema."""

    workflow: str
    version: str
    input_schema: object = None


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


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A worker is alive and holds these runs."""

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
    """Reply to `ClaimRun`: the run (with its new revision) and its recorded task history."""

    run: RunInfo
    tasks: tuple[RecordedTask, ...] = ()
    task_attempts: tuple[tuple[str, int, int], ...] = ()
    """Failed attempts so far of tasks without a final outcome: (address, seq, attempts)."""


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
class HeartbeatAck:
    """Reply to `Heartbeat`."""

    worker_id: str


@attrs.frozen(kw_only=True)
class ErrorBody:
    """An error reply: ``code`` names an `aiki.errors` class."""

    code: str
    message: str
    errors: tuple[str, ...] = ()
    run_id: str | None = None


@attrs.frozen
class Operation:
    """One operation: its name, request codec and reply codec."""

    name: str
    request: WireCodec[object]
    reply: WireCodec[object]


def _operation(name: str, request: object, reply: object) -> Operation:
    return Operation(name, WireCodec[object](request), WireCodec[object](reply))


OPERATIONS: Final[dict[str, Operation]] = {
    op.name: op
    for op in (
        _operation("start_run", StartRun, RunStarted),
        _operation("get_run", GetRun, RunInfo),
        _operation("list_runs", ListRuns, RunPage),
        _operation("wait_run", WaitRun, RunInfo),
        _operation("register_worker", RegisterWorker, WorkerRegistered),
        _operation("claim_run", ClaimRun, RunClaimed | ClaimRejected),
        _operation("record_task", RecordTask, TaskRecorded),
        _operation("transition_run", TransitionRun, RunTransitioned),
        _operation("heartbeat", Heartbeat, HeartbeatAck),
        _operation("requeue_run", RequeueRun, RunTransitioned),
    )
}
"""Every operation by name, as used in URLs and WebSocket frames."""

OPERATION_OF: Final[dict[type, str]] = {
    StartRun: "start_run",
    GetRun: "get_run",
    ListRuns: "list_runs",
    WaitRun: "wait_run",
    RegisterWorker: "register_worker",
    ClaimRun: "claim_run",
    RecordTask: "record_task",
    TransitionRun: "transition_run",
    Heartbeat: "heartbeat",
    RequeueRun: "requeue_run",
}

ERROR_BODY: Final = WireCodec[ErrorBody](ErrorBody)
