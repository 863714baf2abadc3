"""Wire types of the schedule operations (registered in `aiki._operation_table.OPERATIONS`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import attrs

from ._occurrences import SchedulePolicy, ScheduleSpec
from ._protocol import ConflictPolicy, RunInfo, StartOptions

ScheduleStatus = Literal["active", "paused", "deactivated"]


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


@attrs.frozen(kw_only=True)
class ActivateSchedule:
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
class ScheduleActivated:
    """Reply to `ActivateSchedule`: ``created`` is False if it existed already."""

    schedule: ScheduleInfo
    created: bool


@attrs.frozen(kw_only=True)
class GetSchedule:
    """Look a schedule up by ``schedule_id`` or ``reference_id``, with its next fire times
    and latest runs."""

    schedule_id: str | None = None
    reference_id: str | None = None
    upcoming: int = 5
    recent_runs: int = 10


@attrs.frozen(kw_only=True)
class ScheduleDetails:
    """Reply to `GetSchedule`: ``upcoming`` holds the next fire times (nominal, UTC),
    ``recent_runs`` the latest runs it started, newest first."""

    schedule: ScheduleInfo
    upcoming: tuple[dt.datetime, ...]
    recent_runs: tuple[RunInfo, ...]


@attrs.frozen(kw_only=True)
class ListSchedules:
    """List schedules, newest first, optionally filtered; page with ``cursor``."""

    workflow: str | None = None
    statuses: tuple[ScheduleStatus, ...] = ()
    limit: int = 50
    cursor: str | None = None


@attrs.frozen(kw_only=True)
class SchedulePage:
    """One page of schedules; ``next_cursor`` fetches the next (None at the end)."""

    schedules: tuple[ScheduleInfo, ...]
    next_cursor: str | None = None


@attrs.frozen(kw_only=True)
class PauseSchedule:
    """Stop firing until resumed (occurrences meanwhile are not caught up)."""

    schedule_id: str


@attrs.frozen(kw_only=True)
class ResumeSchedule:
    """Fire again, from the next occurrence after now."""

    schedule_id: str


@attrs.frozen(kw_only=True)
class DeactivateSchedule:
    """Stop firing for good (runs it started are not touched). The same definition can be
    activated again afterwards as a new schedule."""

    schedule_id: str
