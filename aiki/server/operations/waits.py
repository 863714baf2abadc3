"""Operations on durable waits: begin a wait, suspend a run, send events, start children.

A run's waits are recorded steps; the server resolves them (a sleep ends, an event
arrives, a child ends) and queues a suspended run again once one of its waits is.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from ...errors import BadRequestError, ConflictError, InvalidTransitionError, RunNotFoundError
from ...protocol import (
    BEGIN_WAIT,
    SEND_EVENT,
    START_CHILD,
    SUSPEND_RUN,
    TERMINAL,
    BeginWait,
    EventSent,
    RecordedWait,
    RunInfo,
    RunStarted,
    RunTransitioned,
    SendEvent,
    StartChild,
    StartRun,
    SuspendRun,
)
from ..delivery import FAST_LEASE_SECONDS
from ..store.scoped import new_id
from ._handlers import Handlers
from ._services import run_uuid
from .runs import LimitsAtStart, existing_start, input_hash
from .workers import check_history, observe_tasks

if TYPE_CHECKING:
    from ..store.scoped import EventOutcome, Scoped
    from ._services import Caller, Services


async def begin_wait(services: Services, request: BeginWait, caller: Caller) -> RecordedWait:
    """Record a wait the run reached (resolved at once if possible), fenced."""
    check_history(request.run_id, request.revision, request.history)
    run_id = run_uuid(request.run_id)

    def begin(scoped: Scoped) -> RecordedWait | None:
        if request.history and not scoped.record_history(request.history, run_id,
                                                         request.revision):  # fmt: skip
            return None
        return scoped.begin_wait(request, run_id)

    try:
        record = await services.transact(caller, begin)
    except LookupError as exc:
        raise BadRequestError(str(exc)) from None
    if record is None:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    observe_tasks(services, caller, request.history)
    if record.state == "pending" and request.seconds is not None:
        services.wakeups.deadline(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.seconds))
    return record


async def suspend_run(services: Services, request: SuspendRun, caller: Caller) -> RunTransitioned:
    """Suspend a run whose branches all wait on pending waits; queue it instead if one of
    them was resolved or withdrawn meanwhile, or none is named (nothing could wake it).
    The history it carries (waits given up among it) is stored first."""
    check_history(request.run_id, request.revision, request.history)
    run_id = run_uuid(request.run_id)
    blocked = [(str(kind), key, seq) for kind, key, seq in request.blocked_on]

    def suspend(scoped: Scoped) -> RunInfo | None:
        if request.history and not scoped.record_history(request.history, run_id,
                                                         request.revision):  # fmt: skip
            return None
        return scoped.suspend(run_id, request.revision, blocked)

    moved = await services.transact(caller, suspend)
    if moved is None:
        raise await services.fenced_out(run_id, request.run_id, request.revision, caller)
    observe_tasks(services, caller, request.history)
    services.notifier.notify(request.run_id)
    services.wakeups.room_changed()
    if moved.status == "queued":
        services.wakeups.queued()
    return RunTransitioned(run_id=moved.id, status=moved.status, revision=moved.revision)


async def send_event(services: Services, request: SendEvent, caller: Caller) -> EventSent:
    """Deliver an event (validated against the version's declared payload type). One with
    a reference ID the run already has is a duplicate, whatever the run's state: answered
    as delivered before (webhooks retry); only a new event to an ended run is refused."""
    run_id = run_uuid(request.run_id)

    def send(scoped: Scoped) -> EventOutcome:
        found = scoped.lock_run(run_id)
        if found is None:
            raise RunNotFoundError(f"no run with ID {request.run_id!r}")
        namespace, workflow, version, status = found
        services.schemas.check_event(namespace, workflow, version, request.name,
                                     request.payload)  # fmt: skip
        reference = request.reference_id
        if reference is not None and (seen := scoped.delivered(run_id, request.name, reference)):
            return seen
        if status in TERMINAL:
            raise InvalidTransitionError(
                f"run {request.run_id} is {status}; it takes no more events"
            )
        limit = services.max_events_per_run
        sent = scoped.send_event(run_id, request.name, request.payload, request.reference_id,
                                 limit=limit)  # fmt: skip
        if sent is None:
            raise ConflictError(
                f"run {request.run_id} has taken {limit} events, the most a run takes "
                "(--max-events-per-run); this one is not stored"
            )
        return sent

    outcome = await services.transact(caller, send)
    if outcome.requeued:
        services.notifier.notify(request.run_id)
        services.wakeups.queued()
    return EventSent(run_id=request.run_id, name=request.name, seq=outcome.seq,
                     duplicate=outcome.duplicate)  # fmt: skip


async def start_child(services: Services, request: StartChild, caller: Caller) -> RunStarted:
    """Start (or find) the child run of a parent's step, fenced by the parent's revision;
    the child belongs to its parent's namespace (the worker's)."""
    await services.check_input(caller.home, request.workflow, request.version, request.input)
    parent_id = run_uuid(request.parent_id)
    options = request.options
    digest = input_hash(request.input)
    run_id = new_id()
    as_start = StartRun(workflow=request.workflow, version=request.version,
                        input=request.input, options=request.options)  # fmt: skip

    outbox: list[int | None] = [None]
    check_history(request.parent_id, request.revision, request.history)
    scheduled = options.start_delay_seconds is not None or options.start_at is not None
    queue = (caller.home, request.workflow, request.version, options.pool)
    wait = not scheduled and not services.wakeups.room.take(queue)
    limits = LimitsAtStart.of(services, caller.home, as_start, run_id,
                              straight=not (wait or scheduled))  # fmt: skip

    def start(scoped: Scoped) -> RunStarted | None:
        if not scoped.holds_revision(parent_id, request.revision):
            return None
        if request.history:
            scoped.record_history(request.history, parent_id, request.revision)
        existing = scoped.child_of(parent_id, request.address, request.seq)
        if existing is not None:
            return RunStarted(run=existing, created=False)
        if limits.acting and options.reference_id is not None and (
                found := existing_start(scoped, as_start, digest)):  # fmt: skip
            return found  # (before a refusal: a repeated start finds its run)
        admit = limits.before_insert(scoped)
        created = scoped.insert_run(
            run_id=run_id, workflow=request.workflow,
            version=request.version, input_json=request.input, input_hash=digest,
            options=options, parent_id=parent_id, child_address=request.address,
            child_seq=request.seq, fast_lease_seconds=FAST_LEASE_SECONDS, wait=wait,
            admit=admit,
        )  # fmt: skip
        if created is None:  # the reference ID exists (an earlier or racing start)
            found = existing_start(scoped, as_start, digest)
            assert found is not None
            return found
        outbox[0] = created[1]
        return RunStarted(run=created[0], created=True)

    started = await services.transact(caller, start)
    if started is None:
        raise await services.fenced_out(parent_id, request.parent_id, request.revision, caller)
    observe_tasks(services, caller, request.history)
    if started.created:
        services.after_start(started.run, outbox[0])
    limits.after_commit(services)
    return started


HANDLERS: Final = (
    Handlers()
    .on(BEGIN_WAIT, begin_wait)
    .on(SUSPEND_RUN, suspend_run)
    .on(SEND_EVENT, send_event)
    .on(START_CHILD, start_child)
)
"""The handlers of the wait operations."""
