"""Every operation of the API by name: its request and reply types and their codecs.

The carriers (HTTP ``POST /api/v1/<operation>`` and the WebSocket session) and the
clients look operations up here; the types live in `aiki._protocol` (runs, workers,
waits, live updates) and `aiki._protocol_schedules` (schedules).
"""

from __future__ import annotations

from typing import Final

import attrs

from transport import WireCodec

from ._protocol import (
    BeginWait,
    CancelRun,
    ClaimedRuns,
    ClaimNext,
    ClaimRejected,
    ClaimRun,
    EventSent,
    GetRun,
    Heartbeat,
    HeartbeatAck,
    ListRuns,
    PauseRun,
    ProgressReported,
    RecordTask,
    RegisterWorker,
    ReportProgress,
    RequeueRun,
    ResumeRun,
    RunClaimed,
    RunInfo,
    RunPage,
    RunsStopped,
    RunStarted,
    RunTransitioned,
    SendEvent,
    StartChild,
    StartRun,
    SuspendRun,
    TaskRecorded,
    TransitionRun,
    WaitRun,
    WakeupRun,
    WokenUp,
    WorkerRegistered,
)
from ._protocol_live import Subscribe, Subscribed, Unsubscribe, Unsubscribed
from ._protocol_schedules import (
    ActivateSchedule,
    DeactivateSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    ScheduleActivated,
    ScheduleDetails,
    ScheduleInfo,
    SchedulePage,
)
from ._protocol_views import DescribeRun, ListWorkers, RunDetails, WorkerList
from ._replay import RecordedWait


@attrs.frozen
class Operation:
    """One operation: its name, request class, request codec and reply codec."""

    name: str
    request_type: object
    request: WireCodec[object]
    reply: WireCodec[object]
    reply_type: object = None
    """The reply class (or a union of them)."""


def _operation(name: str, request: object, reply: object) -> Operation:
    return Operation(name, request, WireCodec[object](request), WireCodec[object](reply), reply)


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
        _operation("begin_wait", BeginWait, RecordedWait),
        _operation("suspend_run", SuspendRun, RunTransitioned),
        _operation("send_event", SendEvent, EventSent),
        _operation("start_child", StartChild, RunStarted),
        _operation("cancel_run", CancelRun, RunsStopped),
        _operation("pause_run", PauseRun, RunsStopped),
        _operation("resume_run", ResumeRun, RunTransitioned),
        _operation("wakeup_run", WakeupRun, WokenUp),
        _operation("claim_next", ClaimNext, ClaimedRuns),
        _operation("report_progress", ReportProgress, ProgressReported),
        _operation("describe_run", DescribeRun, RunDetails),
        _operation("list_workers", ListWorkers, WorkerList),
        _operation("subscribe", Subscribe, Subscribed),
        _operation("unsubscribe", Unsubscribe, Unsubscribed),
        _operation("activate_schedule", ActivateSchedule, ScheduleActivated),
        _operation("get_schedule", GetSchedule, ScheduleDetails),
        _operation("list_schedules", ListSchedules, SchedulePage),
        _operation("pause_schedule", PauseSchedule, ScheduleInfo),
        _operation("resume_schedule", ResumeSchedule, ScheduleInfo),
        _operation("deactivate_schedule", DeactivateSchedule, ScheduleInfo),
    )
}
"""Every operation by name, as used in URLs and WebSocket frames."""

OPERATION_OF: Final[dict[object, str]] = {op.request_type: op.name for op in OPERATIONS.values()}
"""The operation name of each request class."""

SESSION_ONLY: Final = frozenset({"subscribe", "unsubscribe"})
"""Operations that only make sense on a WebSocket session (pushes need somewhere to go)."""
