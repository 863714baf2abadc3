"""Wire types of runs: starting, reading, waiting for and controlling them.

Every operation is one typed request and reply, on two carriers:

- HTTP: ``POST /api/v1/<operation>`` with the request as a JSON object; the reply is the
  JSON reply, or an error ``{"error": {"code", "message", "errors"}}`` with a 4xx/5xx.
- the WebSocket session at ``/api/v1/session`` (`aiki.protocol.ClientProtocol`).

User payloads (inputs, outputs) are fields typed ``object``: JSON passed through as is.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import attrs

from ..errors import ErrorInfo
from ..retry import RetryPolicy
from ._operation import CLIENTS, READERS, Request, declare
from ._states import RunStatus

ConflictPolicy = Literal["error", "return_existing"]


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
    priority: int | None = None
    """0 (lowest) to 4 (highest): a run waiting at the gate goes before every waiting run
    of a lower level. None: the parent's (for a child), else `DEFAULT_PRIORITY`."""
    fairness_key: str | None = None
    """Who the run is for (a tenant): within a priority level, waiting runs are sent
    across fairness keys in proportion to their weights. None: the parent's (for a
    child), else one key shared by every run that names none."""
    fairness_weight: int | None = None
    """The fairness key's share (1..1000; default 1, or the parent's for a child)."""


DEFAULT_PRIORITY: Final = 2
"""The priority of a run that names none (and has no parent)."""


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
    namespace: str = "default"
    """The namespace the run belongs to (its starter's; a child's, its parent's)."""
    priority: int = DEFAULT_PRIORITY
    """0 (lowest) to 4 (highest); see `StartOptions.priority`."""
    fairness_key: str | None = None
    """The tenant it runs for (None: the key shared by runs that name none)."""
    fairness_weight: int = 1
    gated_at: dt.datetime | None = None
    """Since when the run waits at the gate for a slot of its concurrency limits (None:
    it does not)."""


# -- replies ------------------------------------------------------------------------------------


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
class RunTransitioned:
    """Reply to `TransitionRun` and `RequeueRun`."""

    run_id: str
    status: RunStatus
    revision: int


@attrs.frozen(kw_only=True)
class RunsStopped:
    """Reply to `CancelRun` / `PauseRun`: the runs that changed, the requested one first."""

    run_id: str
    status: RunStatus
    affected: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RunsRetried:
    """Reply to `RetryRun` and `RetryRuns`: the runs queued again."""

    run_ids: tuple[str, ...] = ()
    """The failed runs retried (for `RetryRun`, the one asked for)."""
    affected: tuple[str, ...] = ()
    """Every run queued again: those and their failed descendants."""
    more: bool = False
    """`RetryRuns`: more runs match; call again (the same filter) for the next ones."""


@attrs.frozen(kw_only=True)
class WokenUp:
    """Reply to `WakeupRun`: how many sleeps were cut short."""

    run_id: str
    sleeps: int


@attrs.frozen(kw_only=True)
class EventSent:
    """Reply to `SendEvent`; ``duplicate`` if its reference ID was seen before."""

    run_id: str
    name: str
    seq: int
    duplicate: bool = False


# -- requests -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StartRun(Request[RunStarted]):
    """Create a run of a registered workflow version and queue it."""

    workflow: str
    version: str
    input: object = None
    options: StartOptions = attrs.Factory(StartOptions)


@attrs.frozen(kw_only=True)
class GetRun(Request[RunInfo]):
    """Look a run up by ``run_id``, or by ``workflow`` + ``version`` + ``reference_id``."""

    run_id: str | None = None
    workflow: str | None = None
    version: str | None = None
    reference_id: str | None = None


@attrs.frozen(kw_only=True)
class ListRuns(Request[RunPage]):
    """List runs, newest first, optionally filtered; page with ``cursor``. A page holds at
    most ``limit`` runs (1..500) and 4 MiB of their inputs, outputs and errors (always one
    run): follow ``next_cursor`` until it is null."""

    workflow: str | None = None
    version: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    reference_id: str | None = None
    """Only runs started with this reference ID (of any workflow unless one is named)."""
    parent_id: str | None = None
    """Only the child runs of this run."""
    limit: int = 50
    cursor: str | None = None


@attrs.frozen(kw_only=True)
class WaitRun(Request[RunInfo]):
    """Reply once the run is in one of ``statuses`` (or terminal), or after ``timeout_seconds``."""

    run_id: str
    statuses: tuple[RunStatus, ...]
    timeout_seconds: float = 30.0


@attrs.frozen(kw_only=True)
class SendEvent(Request[EventSent]):
    """Deliver an event to a run; a repeated ``reference_id`` is ignored."""

    run_id: str
    name: str
    payload: object = None
    reference_id: str | None = None


@attrs.frozen(kw_only=True)
class CancelRun(Request[RunsStopped]):
    """Cancel a run and all its non-terminal descendants."""

    run_id: str
    reason: str = "cancelled"


@attrs.frozen(kw_only=True)
class PauseRun(Request[RunsStopped]):
    """Pause a run: it stops (if running) and is not started again until resumed."""

    run_id: str
    reason: str = "paused"


@attrs.frozen(kw_only=True)
class ResumeRun(Request[RunTransitioned]):
    """Resume a paused run (it is queued again)."""

    run_id: str


@attrs.frozen(kw_only=True)
class WakeupRun(Request[WokenUp]):
    """End the run's pending sleeps now (they report being cut short)."""

    run_id: str


@attrs.frozen(kw_only=True)
class RequeueRun(Request[RunTransitioned]):
    """Release a run's claim and queue it again (recovery); the revision bump fences the owner."""

    run_id: str
    reason: str = "requeued"


@attrs.frozen(kw_only=True)
class RetryRun(Request[RunsRetried]):
    """Queue a failed run again, after a fix: a fresh first attempt of its version that
    replays its completed tasks, waits and children, and runs its failed tasks again.

    Its failed descendants are retried with it (their parent waits on them afresh). A
    child run is retried through its top-level run: retrying it alone would not reach
    the parent that already took its outcome.
    """

    run_id: str
    reason: str = "retried"


@attrs.frozen(kw_only=True)
class RetryRuns(Request[RunsRetried]):
    """`RetryRun` in bulk: the failed top-level runs of ``workflow`` (and ``version``)
    that failed at or after ``failed_after`` and before ``failed_before``, the earliest
    failed first, at most ``limit`` (1..500) per call. Call again while ``more``: a run
    retried and failing again is left alone by a ``failed_before`` set at the first
    call."""

    workflow: str
    version: str | None = None
    failed_after: dt.datetime | None = None
    failed_before: dt.datetime | None = None
    limit: int = 100
    reason: str = "retried"


START_RUN: Final = declare("start_run", StartRun, callers=CLIENTS)
GET_RUN: Final = declare("get_run", GetRun, callers=READERS)
LIST_RUNS: Final = declare("list_runs", ListRuns, callers=READERS)
WAIT_RUN: Final = declare("wait_run", WaitRun, callers=READERS)
SEND_EVENT: Final = declare("send_event", SendEvent, callers=CLIENTS)
CANCEL_RUN: Final = declare("cancel_run", CancelRun, callers=CLIENTS)
PAUSE_RUN: Final = declare("pause_run", PauseRun, callers=CLIENTS)
RESUME_RUN: Final = declare("resume_run", ResumeRun, callers=CLIENTS)
WAKEUP_RUN: Final = declare("wakeup_run", WakeupRun, callers=CLIENTS)
REQUEUE_RUN: Final = declare("requeue_run", RequeueRun, callers=CLIENTS)
RETRY_RUN: Final = declare("retry_run", RetryRun, callers=CLIENTS)
RETRY_RUNS: Final = declare("retry_runs", RetryRuns, callers=CLIENTS)

OPERATIONS: Final = (
    START_RUN, GET_RUN, LIST_RUNS, WAIT_RUN, SEND_EVENT,
    CANCEL_RUN, PAUSE_RUN, RESUME_RUN, WAKEUP_RUN, REQUEUE_RUN, RETRY_RUN, RETRY_RUNS,
)  # fmt: skip
"""The operations on runs."""
