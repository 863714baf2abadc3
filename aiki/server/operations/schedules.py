"""Operations on schedules: activate (idempotently), show, list, pause, resume, deactivate.

Firing is not here: the server's ``scheduler`` actor does it (`aiki.server._scheduler`);
these operations tell it about new due times.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import TYPE_CHECKING, Final

from ...errors import (
    BadRequestError,
    InvalidTransitionError,
    ScheduleConflictError,
    ScheduleNotFoundError,
)
from ...protocol import (
    ACTIVATE_SCHEDULE,
    DEACTIVATE_SCHEDULE,
    GET_SCHEDULE,
    LIST_SCHEDULES,
    PAUSE_SCHEDULE,
    RESUME_SCHEDULE,
    ActivateSchedule,
    Clock,
    DeactivateSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    ScheduleActivated,
    ScheduleDetails,
    ScheduleInfo,
    SchedulePage,
    ScheduleStatus,
    canonical_json,
    check_spec,
    jitter_of,
)
from ...wire import make_wire_converter
from ..store.scoped import new_id, parse_id
from ._handlers import Handlers

if TYPE_CHECKING:
    import datetime as dt

    from ..store.scoped import Scoped
    from ._services import Caller, Services

_CONVERT: Final = make_wire_converter()

logger = logging.getLogger(__name__)


def definition_hash(request: ActivateSchedule) -> str:
    """The hash of everything that defines a schedule (not its reference ID)."""
    definition = _CONVERT.unstructure(request)
    for name in ("reference_id", "conflict"):
        definition.pop(name, None)
    return hashlib.sha256(canonical_json(definition)).hexdigest()


async def activate_schedule(
    services: Services, request: ActivateSchedule, caller: Caller
) -> ScheduleActivated:
    """Validate the definition and the input, then store the schedule (or return the
    live one with the same identity)."""
    check_spec(request.spec, request.policy)
    options = request.options
    if options.reference_id is not None or options.start_at or options.start_delay_seconds:
        raise BadRequestError(
            "a schedule's run options take pool, retry and timeout_seconds; each run gets "
            "its start from the schedule (no reference_id or trigger)",
            errors=("@ $.options",),
        )
    await services.check_input(caller.home, request.workflow, request.version, request.input)
    digest = definition_hash(request)
    identity = f"ref:{request.reference_id}" if request.reference_id else f"def:{digest}"
    schedule_id = new_id()

    def activate(scoped: Scoped) -> ScheduleActivated:
        for _ in range(2):  # a racing activation of the same identity may commit first
            found = scoped.live_schedule(identity)
            if found is not None:
                existing, existing_hash = found
                if existing_hash != digest and request.conflict == "error":
                    raise ScheduleConflictError(
                        f"schedule {existing.id} has reference ID {request.reference_id!r}"
                        " and another definition; deactivate it to replace it, or pass "
                        "conflict='return_existing'"
                    )
                return ScheduleActivated(schedule=existing, created=False)
            anchor = scoped.now()
            first = Clock(request.spec, anchor).after(anchor)
            created = scoped.insert_schedule(
                schedule_id=schedule_id, identity=identity,
                definition_hash=digest,
                request=request, anchor=anchor, next_at=first,
                due_at=first + jitter_of(str(schedule_id), first,
                                         request.policy.jitter_seconds),
            )  # fmt: skip
            if created is not None:
                return ScheduleActivated(schedule=created, created=True)
        raise AssertionError("unreachable: the identity is neither live nor free")

    activated = await services.transact(caller, activate)
    if activated.created:
        info = activated.schedule
        logger.info("schedule %s activated for %s@%s: %s", info.id, info.workflow,
                    info.version, info.description)  # fmt: skip
        assert info.next_due_at is not None
        services.wakeups.schedule_due(info.next_due_at)
    return activated


def _schedule_uuid(schedule_id: str) -> uuid.UUID:
    parsed = parse_id(schedule_id)
    if parsed is None:
        raise ScheduleNotFoundError(f"no schedule with ID {schedule_id!r}")
    return parsed


async def get_schedule(services: Services, request: GetSchedule, caller: Caller) -> ScheduleDetails:
    """A schedule with its next fire times and latest runs."""
    if request.schedule_id is None and request.reference_id is None:
        raise BadRequestError("get_schedule needs schedule_id or reference_id",
                              errors=("missing @ $.schedule_id",))  # fmt: skip
    wanted = None if request.schedule_id is None else _schedule_uuid(request.schedule_id)

    def read(scoped: Scoped) -> ScheduleDetails | None:
        if wanted is not None:
            found = scoped.schedule(wanted)
        else:
            assert request.reference_id is not None
            found = scoped.schedule_by_reference(request.reference_id)
        if found is None:  # (or another namespace's: not found either)
            return None
        info, anchor = found
        upcoming: list[dt.datetime] = []
        moment = info.next_fire_at
        clock = Clock(info.spec, anchor)
        while moment is not None and len(upcoming) < request.upcoming:
            upcoming.append(moment)
            moment = clock.after(moment)
        runs = scoped.recent_runs(uuid.UUID(info.id), request.recent_runs)
        return ScheduleDetails(schedule=info, upcoming=tuple(upcoming),
                               recent_runs=tuple(runs))  # fmt: skip

    details = await services.transact(caller, read)
    if details is None:
        what = (f"ID {request.schedule_id!r}" if request.schedule_id is not None
                else f"reference ID {request.reference_id!r}")  # fmt: skip
        raise ScheduleNotFoundError(f"no schedule with {what}")
    return details


async def list_schedules(
    services: Services, request: ListSchedules, caller: Caller
) -> SchedulePage:
    """A page of schedules, newest first."""
    found, cursor = await services.transact(caller, lambda scoped: scoped.list_schedules(
        workflow=request.workflow, statuses=request.statuses, limit=request.limit,
        cursor=request.cursor))  # fmt: skip
    return SchedulePage(schedules=tuple(found), next_cursor=cursor)


async def _set_status(
    services: Services, caller: Caller, schedule_id: str, status: ScheduleStatus
) -> ScheduleInfo:
    """Pause, resume or deactivate; asking for the current status changes nothing."""
    wanted = _schedule_uuid(schedule_id)

    def move(scoped: Scoped) -> ScheduleInfo | None:
        found = scoped.schedule(wanted, lock=True)
        if found is None:  # (or another namespace's: not found either)
            return None
        info, anchor = found
        if info.status == status:
            return info
        if info.status == "deactivated":
            raise InvalidTransitionError(f"schedule {schedule_id} is deactivated; activate "
                                         "its definition again for a new one")  # fmt: skip
        if status != "active":
            return scoped.set_schedule_status(wanted, status)
        # Resumed: from the next occurrence after now; those during the pause are skipped.
        upcoming = Clock(info.spec, anchor).after(scoped.now())
        due = upcoming + jitter_of(info.id, upcoming, info.policy.jitter_seconds)
        return scoped.set_schedule_status(wanted, "active", upcoming, due)

    moved = await services.transact(caller, move)
    if moved is None:
        raise ScheduleNotFoundError(f"no schedule with ID {schedule_id!r}")
    if moved.next_due_at is not None:
        services.wakeups.schedule_due(moved.next_due_at)
    logger.info("schedule %s is %s", moved.id, moved.status)
    return moved


async def pause_schedule(
    services: Services, request: PauseSchedule, caller: Caller
) -> ScheduleInfo:
    """Stop a schedule firing until resumed."""
    return await _set_status(services, caller, request.schedule_id, "paused")


async def resume_schedule(
    services: Services, request: ResumeSchedule, caller: Caller
) -> ScheduleInfo:
    """Fire a paused schedule again, from its next occurrence after now."""
    return await _set_status(services, caller, request.schedule_id, "active")


async def deactivate_schedule(
    services: Services, request: DeactivateSchedule, caller: Caller
) -> ScheduleInfo:
    """Stop a schedule for good."""
    return await _set_status(services, caller, request.schedule_id, "deactivated")


HANDLERS: Final = (
    Handlers()
    .on(ACTIVATE_SCHEDULE, activate_schedule)
    .on(GET_SCHEDULE, get_schedule)
    .on(LIST_SCHEDULES, list_schedules)
    .on(PAUSE_SCHEDULE, pause_schedule)
    .on(RESUME_SCHEDULE, resume_schedule)
    .on(DEACTIVATE_SCHEDULE, deactivate_schedule)
)
"""The handlers of the schedule operations."""
