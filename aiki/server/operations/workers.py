"""Operations of workers: register, claim runs, record tasks, move runs on, heartbeats.

Every write about a run carries the revision the worker's claim gave it, and is applied
only while that revision is current (fencing): a worker presumed dead that wakes up gets
a conflict and stops.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import jsonschema

from ...errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidTransitionError,
    NotFoundError,
    RunNotFoundError,
    VersionConflictError,
)
from ...protocol import (
    ALL_STATUSES,
    CLAIM_NEXT,
    CLAIM_RUN,
    DEREGISTER_WORKER,
    HEARTBEAT,
    MAX_CLAIM_NEXT,
    OFFER_SLOT,
    RECORD_HISTORY,
    RECORD_TASK,
    REGISTER_WORKER,
    REPORT_PROGRESS,
    TRANSITION_RUN,
    ClaimedRuns,
    ClaimNext,
    ClaimRejected,
    ClaimRun,
    DeregisterWorker,
    Heartbeat,
    HeartbeatAck,
    HistoryRecorded,
    HistoryUpdate,
    OfferSlot,
    ProgressReported,
    RecordHistory,
    RecordTask,
    RedisGrant,
    RegisterWorker,
    ReportProgress,
    RunClaimed,
    RunInfo,
    RunTransitioned,
    TaskRecorded,
    TransitionRun,
    WorkerDeregistered,
    WorkerRegistered,
    limits_problems,
    schema_problems,
)
from .. import lifecycle
from ..delivery import Offer
from ..store.scoped import WorkerElsewhere, WorkerTaken, parse_id
from ._access import worker_of
from ._handlers import Handlers
from ._services import run_uuid

if TYPE_CHECKING:
    from ..store.scoped import Scoped
    from ._services import Caller, Services

logger = logging.getLogger(__name__)


async def register_worker(
    services: Services, request: RegisterWorker, caller: Caller
) -> WorkerRegistered:
    """Record a worker and the versions it serves; their schemas validate future starts."""
    for index, spec in enumerate(request.versions):
        schemas = {"input_schema": spec.input_schema} | {
            f"event_schemas.{name}": schema for name, schema in spec.event_schemas.items()
        }
        for field, schema in schemas.items():
            if schema is None:
                continue
            where = f"$.versions[{index}].{field}"
            if problems := schema_problems(schema):
                raise BadRequestError(
                    f"schema of {spec.workflow}@{spec.version} not allowed: {problems[0]}",
                    errors=tuple(f"{problem.rpartition(' @ ')[0]} @ {where}"
                                 f"{problem.rpartition(' @ ')[2][1:]}" for problem in problems),
                )  # fmt: skip
            try:
                jsonschema.Draft202012Validator.check_schema(schema)  # type: ignore[arg-type]
            except jsonschema.SchemaError as exc:
                raise BadRequestError(
                    f"invalid schema for {spec.workflow}@{spec.version}: {exc.message}",
                    errors=(f"{exc.message} @ {where}",),
                ) from None

    if problems := limits_problems([(f"$.versions[{index}]", spec.limits)
                                    for index, spec in enumerate(request.versions)]):  # fmt: skip
        raise BadRequestError(
            f"concurrency limits not allowed: {problems[0].rpartition(' @ ')[0]}",
            errors=tuple(problems),
        )
    namespace = caller.home

    session = caller.session
    incarnation = request.incarnation or (None if session is None else session.incarnation)
    if incarnation is None:  # (worker operations come over a session: `authorize`)
        raise ForbiddenError("register_worker needs a worker's WebSocket session")

    def register(scoped: Scoped) -> None:
        try:
            conflicts = scoped.register_worker(
                request.worker_id, request.versions, request.pools, request.concurrency,
                incarnation=incarnation, live_seconds=services.lease_seconds,
                session=None if session is None else session.session_id,
            )  # fmt: skip
        except WorkerTaken:  # raised inside: rolled back
            raise ConflictError(
                f"worker ID {request.worker_id!r} is held by a live worker (another process); "
                "choose another worker ID, or register again once that worker has stopped "
                f"(or has not been heard from for {services.lease_seconds:g} s)"
            ) from None
        except WorkerElsewhere:  # raised inside: rolled back
            raise ForbiddenError(
                f"worker ID {request.worker_id!r} is registered in another namespace; this "
                f"key's workers are in {namespace!r}: choose another worker ID"
            ) from None
        if conflicts:  # raised inside: the transaction is rolled back
            named = ", ".join(f"{workflow}@{version}" for workflow, version in conflicts)
            raise VersionConflictError(
                f"{named} is registered with another input or event schema, or other "
                "concurrency limits; versions are immutable: register the changed code as a "
                "new version"
            )

    await services.transact(caller, register)
    for spec in request.versions:
        services.schemas.remember(namespace, spec.workflow, spec.version, spec.input_schema,
                                  spec.event_schemas, spec.limits)  # fmt: skip
    if caller.session is not None:
        caller.session.bind_worker(request.worker_id)
    logger.info("worker %s registered %d versions", request.worker_id, len(request.versions),
                extra={"worker_id": request.worker_id})  # fmt: skip
    grant = await _redis_grant(services, namespace, request.worker_id, request.redis_credentials)
    return WorkerRegistered(worker_id=request.worker_id, namespace=namespace,
                            stream_shards=services.stream_shards, redis=grant)  # fmt: skip


async def _redis_grant(
    services: Services, namespace: str, worker_id: str, wanted: bool
) -> RedisGrant | None:
    """The worker's new Redis credentials, if it asked for them.

    Raises:
        aiki.BadRequestError: this server grants none.
        aiki.UnavailableError: Redis cannot be reached.
    """
    if not wanted:
        return None
    if services.redis_grants is None:
        raise BadRequestError("this server hands out no Redis credentials: give the worker "
                              "a Redis URL of its own (--redis-url)")  # fmt: skip
    return await services.redis_grants.issue(namespace, worker_id)


async def deregister_worker(
    services: Services, request: DeregisterWorker, caller: Caller
) -> WorkerDeregistered:
    """A worker stops: it is gone from the list, and its runs are queued again at once."""
    worker_id = worker_of(caller, request.worker_id)
    released = await services.transact(caller, lambda scoped: scoped.deregister(MAX_CLAIM_NEXT))
    if released:
        services.wakeups.queued()
    logger.info("worker %s stopped; %d runs it held queued again", worker_id, released,
                extra={"worker_id": worker_id})  # fmt: skip
    return WorkerDeregistered(worker_id=worker_id, released=released)


async def claim_run(
    services: Services, request: ClaimRun, caller: Caller
) -> RunClaimed | ClaimRejected:
    """Give a queued run to a worker, with the steps recorded so far."""
    worker_of(caller, request.worker_id)
    run_id = run_uuid(request.run_id)

    def claim(scoped: Scoped) -> RunClaimed | ClaimRejected:
        run = scoped.claim_run(run_id)
        if run is None:
            current = scoped.run_status(run_id)
            if current is None:  # (or another namespace's: not found either)
                raise RunNotFoundError(f"no run with ID {request.run_id!r}")
            return ClaimRejected(run_id=request.run_id, status=current[0],
                                 reason=f"run is {current[0]}, not queued")  # fmt: skip
        if run.revision == 2:  # the first claim: nothing can have been recorded yet
            return RunClaimed(run=run)
        return scoped.claimed(run)

    reply = await services.transact(caller, claim)
    if isinstance(reply, RunClaimed):
        services.notifier.notify(request.run_id)
        services.wakeups.room_changed()  # one run fewer in flight to its queue's workers
    return reply


def check_task(request: RecordTask) -> None:
    """Refuse a task record that cannot be right.

    Raises:
        aiki.BadRequestError: a failure without an error, or a negative attempt or seq.
    """
    if request.state != "completed" and request.error is None:
        raise BadRequestError("a failed task attempt needs an error", errors=("@ $.error",))
    if request.attempt < 1 or request.seq < 0:
        raise BadRequestError("attempt starts at 1 and seq at 0")


def check_history(run_id: str, revision: int, history: HistoryUpdate) -> None:
    """Refuse history that cannot be the run's: task records of another run or revision,
    a bad task record, a step settled twice.

    Raises:
        aiki.BadRequestError: naming the field.
    """
    for index, task in enumerate(history.tasks):
        if (task.run_id, task.revision) != (run_id, revision):
            raise BadRequestError("tasks carried as history must be of its run and revision",
                                  errors=(f"@ $.history.tasks[{index}]",))  # fmt: skip
        check_task(task)
    positions = [entry.position for entry in history.settled]
    steps = [(entry.address, entry.seq) for entry in history.settled]
    if len(set(positions)) != len(positions) or len(set(steps)) != len(steps):
        raise BadRequestError("a step settles once, at one position",
                              errors=("@ $.history.settled",))  # fmt: skip


def observe_tasks(services: Services, caller: Caller, history: HistoryUpdate) -> None:
    """Count the task durations ``history`` reports (the task latency histogram, in the
    namespace of the caller's worker)."""
    for task in history.tasks:
        _observe(services, caller, task)


async def record_history(
    services: Services, request: RecordHistory, caller: Caller
) -> HistoryRecorded:
    """Store what an execution added to its run's history, fenced by revision."""
    check_history(request.run_id, request.revision, request.history)
    run_id = run_uuid(request.run_id)
    written = await services.transact(
        caller, lambda scoped: scoped.record_history(request.history, run_id, request.revision)
    )
    if not written:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    observe_tasks(services, caller, request.history)
    return HistoryRecorded(run_id=request.run_id)


def _observe(services: Services, caller: Caller, request: RecordTask) -> None:
    if request.duration_seconds is not None and request.duration_seconds >= 0:
        metrics = services.metrics
        series = metrics.task_seconds.labels(caller.home, metrics.task(request.name))
        series.observe(request.duration_seconds)


async def record_task(services: Services, request: RecordTask, caller: Caller) -> TaskRecorded:
    """Store a task outcome, fenced by the worker's revision."""
    check_task(request)
    run_id = run_uuid(request.run_id)
    written = await services.transact(caller, lambda scoped: scoped.record_task(request, run_id))
    if not written:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    _observe(services, caller, request)
    return TaskRecorded(address=request.address, seq=request.seq)


async def report_progress(
    services: Services, request: ReportProgress, caller: Caller
) -> ProgressReported:
    """Keep a running task's latest progress (pushed to subscribers that ask)."""
    run_id = run_uuid(request.run_id)
    written = await services.transact(
        caller, lambda scoped: scoped.report_progress(request, run_id)
    )
    if not written:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    services.notifier.changed()
    return ProgressReported(run_id=request.run_id)


def _check_transition(request: TransitionRun) -> None:
    if request.status not in ALL_STATUSES:
        raise BadRequestError(f"unknown status {request.status!r}")
    if not lifecycle.allowed("finish", "running", request.status):
        raise InvalidTransitionError(f"a worker cannot move a run to {request.status!r}")
    delay = request.retry_delay_seconds
    if request.status == "awaiting_retry" and (delay is None or delay < 0):
        raise BadRequestError("awaiting_retry needs retry_delay_seconds >= 0")
    if request.status == "failed" and request.error is None:
        raise BadRequestError("a failed run needs an error", errors=("@ $.error",))
    check_history(request.run_id, request.revision, request.history)


async def transition_run(
    services: Services, request: TransitionRun, caller: Caller
) -> RunTransitioned:
    """Move a claimed run on (complete, fail, retry later, give back), fenced by revision;
    the history it carries is stored first, in the same transaction."""
    _check_transition(request)
    run_id = run_uuid(request.run_id)

    def move(scoped: Scoped) -> tuple[RunInfo | None, int]:
        if request.history and not scoped.record_history(request.history, run_id,
                                                         request.revision):  # fmt: skip
            return None, 0  # fenced: nothing was written
        return scoped.finish(request, run_id)

    moved, parents_queued = await services.transact(caller, move)
    if moved is None:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    observe_tasks(services, caller, request.history)
    if moved.status == "completed":
        metrics = services.metrics
        metrics.runs_completed.labels(moved.namespace, metrics.workflow(moved.workflow)).inc()
    elif moved.status == "failed":
        metrics = services.metrics
        metrics.runs_failed.labels(moved.namespace, metrics.workflow(moved.workflow)).inc()
    services.moved(moved, "running", request.reason)
    services.wakeups.room_changed()
    if moved.status == "queued" or parents_queued:
        services.wakeups.queued()
    if moved.status == "awaiting_retry" and moved.wake_at is not None:
        services.wakeups.deadline(moved.wake_at)
    return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)


async def heartbeat(services: Services, request: Heartbeat, caller: Caller) -> HeartbeatAck:
    """The worker is alive: refresh the claims of the runs it holds."""
    worker_of(caller, request.worker_id)
    run_ids = [run_id for run_id in request.run_ids if parse_id(run_id)]
    held = await services.transact(caller, lambda scoped: scoped.refresh_claims(run_ids))
    if held is None:
        raise NotFoundError(f"worker {request.worker_id!r} is not registered")
    grant = await _redis_grant(services, caller.home, request.worker_id, request.renew_redis)
    return HeartbeatAck(worker_id=request.worker_id, held=tuple(held),
                        lease_seconds=services.lease_seconds, redis=grant)  # fmt: skip


async def claim_next(services: Services, request: ClaimNext, caller: Caller) -> ClaimedRuns:
    """Give the worker queued runs it serves (the pull path while Redis is down)."""
    worker_of(caller, request.worker_id)
    claims = await services.transact(caller, lambda scoped: scoped.claim_next(request.limit))
    for claim in claims:
        services.notifier.notify(claim.run.id)
    return ClaimedRuns(claims=tuple(claims))


async def offer_slot(services: Services, request: OfferSlot, caller: Caller) -> ClaimedRuns:
    """Hold one of the worker's free slots open for this server's next start of a run it
    serves (eager dispatch, `_offers`); answer with that start's claim, or with none."""
    worker_id = worker_of(caller, request.worker_id)
    namespace = caller.home
    queues = tuple({(namespace, q.workflow, q.version, q.pool): None for q in request.queues})
    claim = await services.offers.hold(Offer(worker_id, queues), request.wait_seconds)
    return ClaimedRuns(claims=() if claim is None else (claim,))


HANDLERS: Final = (
    Handlers()
    .on(REGISTER_WORKER, register_worker)
    .on(DEREGISTER_WORKER, deregister_worker)
    .on(CLAIM_RUN, claim_run)
    .on(RECORD_TASK, record_task)
    .on(RECORD_HISTORY, record_history)
    .on(REPORT_PROGRESS, report_progress)
    .on(TRANSITION_RUN, transition_run)
    .on(HEARTBEAT, heartbeat)
    .on(CLAIM_NEXT, claim_next)
    .on(OFFER_SLOT, offer_slot)
)
"""The handlers of the worker operations."""
