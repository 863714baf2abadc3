"""Schedules: start a workflow version on a cron expression or at a fixed interval.

::

    daily = aiki.schedule(cron="0 9 * * *", timezone="Europe/Berlin", overlap="skip")
    handle = await daily.activate(client, send_report.with_(pool="reports"), Report("sales"))

    hourly = aiki.schedule(every=timedelta(hours=1), catchup="latest")

The server fires each occurrence exactly once (however many servers run), keeps the
definition in PostgreSQL, and catches up after downtime as the policy says. Definitions
are immutable: activating the same definition again returns the existing schedule; to
change one, deactivate it and activate the new definition.
"""

from __future__ import annotations

import datetime as dt
import typing
from typing import TYPE_CHECKING

from ..protocol import (
    ActivateSchedule,
    CatchupPolicy,
    ConflictPolicy,
    OverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    StartOptions,
    check_spec,
    describe,
)

if TYPE_CHECKING:
    from ..client import Client, ScheduleHandle
    from ._workflow import WorkflowVersion


def _seconds(value: dt.timedelta | float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name}: give a timedelta or a number of seconds, not {value!r}")


class Schedule:
    """When to start runs, and what to do about overlaps and downtime; see `schedule`."""

    def __init__(self, spec: ScheduleSpec, policy: SchedulePolicy) -> None:
        check_spec(spec, policy)
        self.spec = spec
        self.policy = policy

    def __repr__(self) -> str:
        return f"<aiki schedule {describe(self.spec)}>"

    async def activate(
        self,
        client: Client,
        version: WorkflowVersion[typing.Any, typing.Any],
        input: object = None,
        *,
        reference_id: str | None = None,
        conflict: ConflictPolicy = "error",
    ) -> ScheduleHandle:
        """Bind this schedule to ``version`` with ``input``; its runs take the version's
        ``pool``, ``retry`` and ``timeout_seconds`` (set them with ``version.with_(...)``).

        Activation is idempotent: the same definition (schedule, version, input, options)
        returns the live schedule. With ``reference_id``, the schedule is found by it; a
        different definition under it raises, or with ``conflict="return_existing"``
        returns the existing one.

        Raises:
            aiki.ValidationError: the input does not fit the version's type (nothing stored).
            aiki.WorkflowNotFoundError: no worker has registered this version yet.
            aiki.ScheduleConflictError: the reference ID has another definition.
            aiki.UnavailableError: the server cannot be reached.
        """
        current = version.options
        if current.reference_id is not None or current.start_at or current.start_delay_seconds:
            raise ValueError("a scheduled version cannot carry a reference_id or a trigger: "
                             "each occurrence starts its own run")  # fmt: skip
        request = ActivateSchedule(
            workflow=version.workflow,
            version=version.version,
            input=version.input_type.to_json(input),
            spec=self.spec,
            policy=self.policy,
            options=StartOptions(
                pool=current.pool, retry=current.retry, timeout_seconds=current.timeout_seconds
            ),
            reference_id=reference_id,
            conflict=conflict,
        )
        return await client.activate_schedule(request)


def schedule(
    *,
    cron: str | None = None,
    timezone: str = "UTC",
    every: dt.timedelta | float | None = None,
    overlap: OverlapPolicy = "allow",
    catchup: CatchupPolicy = "skip",
    catchup_window: dt.timedelta | float = dt.timedelta(days=1),
    jitter: dt.timedelta | float | None = None,
) -> Schedule:
    """A schedule: ``cron`` (in ``timezone``) or ``every`` (a timedelta or seconds).

    Args:
        cron: five fields (``"0 9 * * MON-FRI"``) or six with leading seconds; evaluated in
            ``timezone`` (an IANA name) with cron's rules at DST changes.
        every: an interval, counted from the activation.
        overlap: ``"allow"`` (default) every occurrence starts a run; ``"skip"`` none starts
            while an earlier run has not ended (a stalled or paused one counts);
            ``"cancel_previous"`` cancels the earlier runs first.
        catchup: what happens to occurrences missed while no server ran (reached more than
            the server's ``--schedule-grace`` late): ``"skip"`` (default) none runs,
            ``"latest"`` the most recent one runs, ``"all"`` each runs, oldest first.
        catchup_window: how far back ``latest`` and ``all`` look.
        jitter: each occurrence is due a fixed pseudo-random time within this much after its
            time (spreads load when many schedules share a time).

    Raises:
        aiki.ValidationError: the expression, timezone or an argument is invalid (raised
            here, before anything is sent).
    """
    spec = ScheduleSpec(cron=cron, timezone=timezone, every_seconds=_seconds(every, "every"))
    policy = SchedulePolicy(
        overlap=overlap,
        catchup=catchup,
        catchup_window_seconds=_seconds(catchup_window, "catchup_window") or 0.0,
        jitter_seconds=_seconds(jitter, "jitter") or 0.0,
    )
    return Schedule(spec, policy)
