"""Operations that control runs: cancel, pause, resume, wake up, requeue, retry.

Each acts on a run the caller sees (`aiki.server.store.scoped`: a run of another namespace
is not found).

Control that stops a run a worker is executing (cancel, pause) commits first (the
revision bump fences the worker), then pushes `StopRun` over that worker's WebSocket
session so the run's cancel scope is cancelled at once instead of at its next write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import BadRequestError, InvalidTransitionError
from ...protocol import (
    CANCEL_RUN,
    PAUSE_RUN,
    REQUEUE_RUN,
    RESUME_RUN,
    RETRY_RUN,
    RETRY_RUNS,
    WAKEUP_RUN,
    CancelRun,
    GetRun,
    PauseRun,
    RequeueRun,
    ResumeRun,
    RetryRun,
    RetryRuns,
    RunsRetried,
    RunsStopped,
    RunTransitioned,
    WakeupRun,
    WokenUp,
)
from .. import lifecycle
from ._handlers import Handlers
from ._services import run_uuid
from .runs import get_run

if TYPE_CHECKING:
    from ...protocol import RunInfo
    from ._services import Caller, Services


async def _status(services: Services, run_id: str, caller: Caller) -> str:
    return (await get_run(services, GetRun(run_id=run_id), caller)).status


async def cancel_run(services: Services, request: CancelRun, caller: Caller) -> RunsStopped:
    """Cancel a run and all its non-terminal descendants."""
    run_id = run_uuid(request.run_id)
    reason = caller.attributed(request.reason)
    stopped = await services.transact(caller, lambda scoped: scoped.cancel_tree(run_id, reason))
    if not stopped or stopped[0].run_id != request.run_id:
        status = await _status(services, request.run_id, caller)
        raise InvalidTransitionError(f"run {request.run_id} is {status} already")
    services.metrics.runs_cancelled.inc(len(stopped))
    services.stop_all(stopped, "cancelled")
    services.wakeups.queued()  # parents waiting on these runs may have been queued
    return RunsStopped(run_id=request.run_id, status="cancelled",
                       affected=tuple(run.run_id for run in stopped))  # fmt: skip


async def pause_run(services: Services, request: PauseRun, caller: Caller) -> RunsStopped:
    """Pause a run; a running one is stopped and resumes later from its history."""
    run_id = run_uuid(request.run_id)
    reason = caller.attributed(request.reason)
    stopped = await services.transact(caller, lambda scoped: scoped.pause(run_id, reason))
    if stopped is None:
        status = await _status(services, request.run_id, caller)
        allowed = ", ".join(lifecycle.sources("pause"))
        raise InvalidTransitionError(
            f"run {request.run_id} is {status}; only {allowed} runs can be paused"
        )
    services.stop_all([stopped], "paused")
    return RunsStopped(run_id=request.run_id, status="paused", affected=(request.run_id,))


async def resume_run(services: Services, request: ResumeRun, caller: Caller) -> RunTransitioned:
    """Queue a paused run again."""
    run_id = run_uuid(request.run_id)
    reason = caller.attributed("resumed")
    moved = await services.transact(caller, lambda scoped: scoped.resume(run_id, reason))
    if moved is None:
        status = await _status(services, request.run_id, caller)
        raise InvalidTransitionError(f"run {request.run_id} is {status}, not paused")
    services.notifier.notify(request.run_id)
    services.wakeups.queued()
    return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)


async def wakeup_run(services: Services, request: WakeupRun, caller: Caller) -> WokenUp:
    """Cut the run's pending sleeps short."""
    run_id = run_uuid(request.run_id)
    count = await services.transact(caller, lambda scoped: scoped.wakeup(run_id))
    if count:
        services.notifier.notify(request.run_id)
        services.wakeups.queued()
    return WokenUp(run_id=request.run_id, sleeps=count)


async def requeue_run(services: Services, request: RequeueRun, caller: Caller) -> RunTransitioned:
    """Release a run's claim and queue it again (recovery)."""
    run_id = run_uuid(request.run_id)
    reason = caller.attributed(request.reason)
    moved = await services.transact(caller, lambda scoped: scoped.requeue_run(run_id, reason))
    if moved is None:
        status = await _status(services, request.run_id, caller)
        allowed = " or ".join(lifecycle.sources("requeue"))
        raise InvalidTransitionError(
            f"run {request.run_id} is {status}; only {allowed} runs can be requeued"
        )
    services.notifier.notify(request.run_id)
    services.wakeups.queued()
    return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)


async def retry_run(services: Services, request: RetryRun, caller: Caller) -> RunsRetried:
    """Queue a failed top-level run again (after a fix), with its failed descendants."""
    run_id = run_uuid(request.run_id)
    reason = caller.attributed(request.reason)
    moved = await services.transact(caller, lambda scoped: scoped.retry_run(run_id, reason))
    if not any(run.id == request.run_id for run in moved):
        run = await get_run(services, GetRun(run_id=request.run_id), caller)
        if run.parent_id is not None and run.status == "failed":
            raise InvalidTransitionError(
                f"run {request.run_id} is a child of run {run.parent_id}, which took its "
                "outcome already: retry the top-level run; its failed children are "
                "retried with it"
            )
        raise InvalidTransitionError(
            f"run {request.run_id} is {run.status}; only failed runs can be retried"
        )
    _queued(services, moved)
    return RunsRetried(run_ids=(request.run_id,), affected=tuple(run.id for run in moved))


async def retry_runs(services: Services, request: RetryRuns, caller: Caller) -> RunsRetried:
    """Retry failed top-level runs of a workflow in bulk, the earliest failed first."""
    if (request.failed_after is not None and request.failed_before is not None
            and request.failed_after >= request.failed_before):  # fmt: skip
        raise BadRequestError(
            "failed_after must be before failed_before",
            errors=("must be before failed_before @ $.failed_after",),
        )
    reason = caller.attributed(request.reason)
    moved, more = await services.transact(caller, lambda scoped: scoped.retry_failed(
        workflow=request.workflow, version=request.version, after=request.failed_after,
        before=request.failed_before, limit=request.limit, reason=reason))  # fmt: skip
    _queued(services, moved)
    return RunsRetried(run_ids=tuple(run.id for run in moved if run.parent_id is None),
                       affected=tuple(run.id for run in moved), more=more)  # fmt: skip


def _queued(services: Services, moved: list[RunInfo]) -> None:
    for run in moved:
        services.notifier.notify(run.id)
    if moved:
        services.wakeups.queued()


HANDLERS: Final = (
    Handlers()
    .on(CANCEL_RUN, cancel_run)
    .on(PAUSE_RUN, pause_run)
    .on(RESUME_RUN, resume_run)
    .on(WAKEUP_RUN, wakeup_run)
    .on(REQUEUE_RUN, requeue_run)
    .on(RETRY_RUN, retry_run)
    .on(RETRY_RUNS, retry_runs)
)
"""The handlers of the control operations."""
