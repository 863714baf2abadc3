"""Operations that control runs: cancel, pause, resume, wake up, requeue.

Each acts on a run the caller sees (`aiki.server.store.scoped`: a run of another namespace
is not found).

Control that stops a run a worker is executing (cancel, pause) commits first (the
revision bump fences the worker), then pushes `StopRun` over that worker's WebSocket
session so the run's cancel scope is cancelled at once instead of at its next write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ...errors import InvalidTransitionError
from ...protocol import (
    CANCEL_RUN,
    PAUSE_RUN,
    REQUEUE_RUN,
    RESUME_RUN,
    WAKEUP_RUN,
    CancelRun,
    GetRun,
    PauseRun,
    RequeueRun,
    ResumeRun,
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


HANDLERS: Final = (
    Handlers()
    .on(CANCEL_RUN, cancel_run)
    .on(PAUSE_RUN, pause_run)
    .on(RESUME_RUN, resume_run)
    .on(WAKEUP_RUN, wakeup_run)
    .on(REQUEUE_RUN, requeue_run)
)
"""The handlers of the control operations."""
