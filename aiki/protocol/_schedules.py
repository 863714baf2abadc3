"""Wire types of schedules: activate (idempotently), read, list, pause, resume, deactivate."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, TypeGuard, get_args

import attrs

from ._occurrences import SchedulePolicy, ScheduleSpec
from ._operation import CLIENTS, READERS, Request, declare
from ._runs import ConflictPolicy, RunInfo, StartOptions

ScheduleStatus = Literal["active", "paused", "deactivated"]


def is_schedule_status(value: str) -> TypeGuard[ScheduleStatus]:
    """Whether ``value`` names a schedule status."""
    return value in get_args(ScheduleStatus)


@attrs.frozen(kw_only=True)
class ScheduleInfo:
    """A schedule as the server knows it.

    ``next_fire_at`` is the next occurrence's time (None unless active), ``next_due_at``
    that time plus its jitter. ``fired`` counts runs started, ``skipped`` occurrences not
    run (overlap policy ``skip``, superseded, or missed during downtime).
    """

    id: str
    workflow: str
    version: str
    input: object
    spec: ScheduleSpec
    policy: SchedulePolicy
    options: StartOptions
    reference_id: str | None
    status: ScheduleStatus
    description: str
    next_fire_at: dt.datetime | None
    next_due_at: dt.datetime | None
    last_fired_at: dt.datetime | None
    fired: int
    skipped: int
    created_at: dt.datetime
    updated_at: dt.datetime
    namespace: str = "default"
    """The namespace the schedule (and every run it starts) belongs to."""


@attrs.frozen(kw_only=True)
class ScheduleActivated:
    """Reply to `ActivateSchedule`: ``created`` is False if it existed already."""

    schedule: ScheduleInfo
    created: bool


@attrs.frozen(kw_only=True)
class ActivateSchedule(Request[ScheduleActivated]):
    """Bind a schedule to a workflow version with an input (idempotent).

    Without ``reference_id`` the schedule is identified by a hash of everything here, so
    activating the same definition again returns the existing schedule. With one, a
    different definition under the same reference ID is an error (``conflict="error"``)
    or returns the existing schedule (``"return_existing"``). ``options`` may carry the
    runs' ``pool``, ``retry`` and ``timeout_seconds``.
    """

    workflow: str
    version: str
    input: object = None
    spec: ScheduleSpec
    policy: SchedulePolicy = attrs.Factory(SchedulePolicy)
    options: StartOptions = attrs.Factory(StartOptions)
    reference_id: str | None = None
    conflict: ConflictPolicy = "error"


@attrs.frozen(kw_only=True)
class ScheduleDetails:
    """Reply to `GetSchedule`: ``upcoming`` holds the next fire times (nominal, UTC),
    ``recent_runs`` the latest runs it started, newest first."""

    schedule: ScheduleInfo
    upcoming: tuple[dt.datetime, ...]
    recent_runs: tuple[RunInfo, ...]


@attrs.frozen(kw_only=True)
class GetSchedule(Request[ScheduleDetails]):
    """Look a schedule up by ``schedule_id`` or ``reference_id``, with its next fire times
    and latest runs."""

    schedule_id: str | None = None
    reference_id: str | None = None
    upcoming: int = 5
    recent_runs: int = 10


@attrs.frozen(kw_only=True)
class SchedulePage:
    """One page of schedules; ``next_cursor`` fetches the next (None at the end)."""

    schedules: tuple[ScheduleInfo, ...]
    next_cursor: str | None = None


@attrs.frozen(kw_only=True)
class ListSchedules(Request[SchedulePage]):
    """List schedules, newest first, optionally filtered; page with ``cursor``. A page holds
    at most ``limit`` schedules (1..500) and 4 MiB of their inputs (always one): follow
    ``next_cursor`` until it is null."""

    workflow: str | None = None
    statuses: tuple[ScheduleStatus, ...] = ()
    limit: int = 50
    cursor: str | None = None


@attrs.frozen(kw_only=True)
class PauseSchedule(Request[ScheduleInfo]):
    """Stop firing until resumed (occurrences meanwhile are not caught up)."""

    schedule_id: str


@attrs.frozen(kw_only=True)
class ResumeSchedule(Request[ScheduleInfo]):
    """Fire again, from the next occurrence after now."""

    schedule_id: str


@attrs.frozen(kw_only=True)
class DeactivateSchedule(Request[ScheduleInfo]):
    """Stop firing for good (runs it started are not touched). The same definition can be
    activated again afterwards as a new schedule."""

    schedule_id: str


ACTIVATE_SCHEDULE: Final = declare("activate_schedule", ActivateSchedule, callers=CLIENTS)
GET_SCHEDULE: Final = declare("get_schedule", GetSchedule, callers=READERS)
LIST_SCHEDULES: Final = declare("list_schedules", ListSchedules, callers=READERS)
PAUSE_SCHEDULE: Final = declare("pause_schedule", PauseSchedule, callers=CLIENTS)
RESUME_SCHEDULE: Final = declare("resume_schedule", ResumeSchedule, callers=CLIENTS)
DEACTIVATE_SCHEDULE: Final = declare("deactivate_schedule", DeactivateSchedule, callers=CLIENTS)

OPERATIONS: Final = (
    ACTIVATE_SCHEDULE, GET_SCHEDULE, LIST_SCHEDULES,
    PAUSE_SCHEDULE, RESUME_SCHEDULE, DEACTIVATE_SCHEDULE,
)  # fmt: skip
"""The operations on schedules."""
