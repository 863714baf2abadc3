"""When a schedule's occurrences fall, and which of them a firing runs.

Pure functions of a definition and a clock reading (no I/O), shared by the SDK (to refuse
a bad definition before anything is sent) and the server's scheduler (to plan a firing).
Cron expressions are evaluated by cronsim in the schedule's timezone, with Debian cron's
rules at DST changes: a job whose time is skipped by spring-forward runs right after the
change; one whose time repeats at fall-back runs once.

An occurrence's *nominal* time comes from the spec; with jitter it is *due* a fixed,
pseudo-random offset later (the same offset on every server, so the firing is the same
whichever server makes it).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import zoneinfo
from typing import TYPE_CHECKING, Final, Literal

import attrs
import cronsim

from ..errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

OverlapPolicy = Literal["allow", "skip", "cancel_previous"]
CatchupPolicy = Literal["skip", "latest", "all"]

UTC: Final = dt.UTC
MIN_EVERY_SECONDS: Final = 0.1
COUNT_CAP: Final = 100_000
"""Skipped occurrences of a cron schedule are counted up to this many per firing."""
_SEARCH_LIMIT: Final = 10_000


@attrs.frozen(kw_only=True)
class ScheduleSpec:
    """When a schedule fires: a cron expression in a timezone, or a fixed interval.

    ``cron`` takes five fields (minute hour day month weekday) or six (a leading seconds
    field); interval occurrences fall at the activation time plus whole multiples of
    ``every_seconds``.
    """

    cron: str | None = None
    timezone: str = "UTC"
    every_seconds: float | None = None


@attrs.frozen(kw_only=True)
class SchedulePolicy:
    """What a schedule does about overlapping runs, downtime and thundering herds.

    Attributes:
        overlap: ``allow`` (default) starts every occurrence; ``skip`` starts none while a
            run of the schedule is still active (queued, running, sleeping, stalled, ...);
            ``cancel_previous`` cancels the active runs, then starts the new one.
        catchup: for occurrences *missed* (the server was down when they were due):
            ``skip`` (default) runs none of them, ``latest`` runs the most recent one, ``all``
            runs each in order. Only those within ``catchup_window_seconds`` are considered.
        catchup_window_seconds: how far back ``latest`` and ``all`` look.
        jitter_seconds: each occurrence is due up to this much after its time (spreads
            schedules that share a time).
    """

    overlap: OverlapPolicy = "allow"
    catchup: CatchupPolicy = "skip"
    catchup_window_seconds: float = 86400.0
    jitter_seconds: float = 0.0


def check_spec(spec: ScheduleSpec, policy: SchedulePolicy) -> None:
    """Refuse a definition that cannot fire as written.

    Raises:
        aiki.ValidationError: with each problem and its field.
    """
    problems: list[str] = []
    if (spec.cron is None) == (spec.every_seconds is None):
        problems.append("give exactly one of cron and every_seconds @ $.spec")
    if spec.cron is not None:
        problems += _cron_problems(spec.cron, spec.timezone)
    if spec.every_seconds is not None:
        if spec.timezone != "UTC":
            problems.append("an interval schedule has no timezone @ $.spec.timezone")
        if not (math.isfinite(spec.every_seconds) and spec.every_seconds >= MIN_EVERY_SECONDS):
            problems.append(f"every_seconds must be at least {MIN_EVERY_SECONDS:g} "
                            "@ $.spec.every_seconds")  # fmt: skip
        elif policy.jitter_seconds >= spec.every_seconds:
            problems.append("jitter must be shorter than the interval @ $.policy.jitter_seconds")
    if policy.overlap not in ("allow", "skip", "cancel_previous"):
        problems.append(f"unknown overlap policy {policy.overlap!r} @ $.policy.overlap")
    if policy.catchup not in ("skip", "latest", "all"):
        problems.append(f"unknown catch-up policy {policy.catchup!r} @ $.policy.catchup")
    for name in ("catchup_window_seconds", "jitter_seconds"):
        value = getattr(policy, name)
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"{name} must be a number >= 0 @ $.policy.{name}")
    if problems:
        raise ValidationError("invalid schedule: " + "; ".join(problems), errors=tuple(problems))


def _cron_problems(cron: str, timezone: str) -> list[str]:
    problems = []
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(f"unknown timezone {timezone!r} (an IANA name such as "
                        "'Europe/Berlin') @ $.spec.timezone")  # fmt: skip
        zone = zoneinfo.ZoneInfo("UTC")
    try:
        next(cronsim.CronSim(cron, dt.datetime.now(zone)))
    except cronsim.CronSimError as exc:
        problems.append(f"invalid cron expression {cron!r}: {exc} @ $.spec.cron")
    except StopIteration:
        problems.append(f"cron expression {cron!r} never fires @ $.spec.cron")
    return problems


@functools.lru_cache(maxsize=4096)
def describe(spec: ScheduleSpec) -> str:
    """The spec in words, e.g. ``"At 09:00 (Europe/Berlin)"`` or ``"every 5 minutes"``."""
    if spec.every_seconds is not None:
        return f"every {_duration(spec.every_seconds)}"
    assert spec.cron is not None
    try:
        words = cronsim.CronSim(spec.cron, dt.datetime.now(UTC)).explain()
    except Exception:  # explain() covers fewer forms than the evaluator; the spec is valid
        words = spec.cron
    return f"{words} ({spec.timezone})"


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


_MICROSECOND: Final = dt.timedelta(microseconds=1)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


@attrs.frozen
class Clock:
    """The occurrences of one schedule: ``anchor`` is its activation time (intervals).

    Interval arithmetic is in whole microseconds (as datetimes are), so stepping from an
    occurrence always reaches the next one.
    """

    spec: ScheduleSpec
    anchor: dt.datetime

    def _every(self) -> int:
        assert self.spec.every_seconds is not None
        return max(1, round(self.spec.every_seconds * 1_000_000))

    def _step(self, steps: int) -> dt.datetime:
        return self.anchor + steps * self._every() * _MICROSECOND

    def _offset(self, moment: dt.datetime) -> int:
        return (moment - self.anchor) // _MICROSECOND

    def first_at_or_after(self, moment: dt.datetime) -> dt.datetime:
        """The earliest occurrence at or after ``moment``."""
        if self.spec.every_seconds is not None:
            return self._step(max(1, _ceil_div(self._offset(moment), self._every())))
        return self._cron(moment - dt.timedelta(seconds=1), at_least=moment)

    def after(self, moment: dt.datetime) -> dt.datetime:
        """The earliest occurrence strictly after ``moment``."""
        if self.spec.every_seconds is not None:
            return self.first_at_or_after(moment + _MICROSECOND)
        return self._cron(moment, at_least=moment + _MICROSECOND)

    def last_before(self, moment: dt.datetime) -> dt.datetime | None:
        """The latest occurrence strictly before ``moment`` (None if there is none)."""
        if self.spec.every_seconds is not None:
            steps = _ceil_div(self._offset(moment), self._every()) - 1
            return self._step(steps) if steps >= 1 else None
        assert self.spec.cron is not None
        zone = zoneinfo.ZoneInfo(self.spec.timezone)
        source = cronsim.CronSim(self.spec.cron, moment.astimezone(zone), reverse=True)
        for found in _limited(source):
            if found.astimezone(UTC) < moment:
                return found.astimezone(UTC)
        return None

    def count(self, start: dt.datetime, end: dt.datetime) -> int:
        """How many occurrences fall in ``[start, end)`` (cron: at most `COUNT_CAP`)."""
        if end <= start:
            return 0
        first = self.first_at_or_after(start)
        if first >= end:
            return 0
        if self.spec.every_seconds is not None:
            return _ceil_div((end - first) // _MICROSECOND, self._every())
        counted, moment = 0, first
        while moment < end and counted < COUNT_CAP:
            counted += 1
            moment = self.after(moment)
        return counted

    def _cron(self, start: dt.datetime, *, at_least: dt.datetime) -> dt.datetime:
        assert self.spec.cron is not None
        zone = zoneinfo.ZoneInfo(self.spec.timezone)
        # Wall-clock iteration can step back an hour at fall-back: keep time monotonic.
        for found in _limited(cronsim.CronSim(self.spec.cron, start.astimezone(zone))):
            if found.astimezone(UTC) >= at_least:
                return found.astimezone(UTC)
        raise ValueError(f"no occurrence of {self.spec.cron!r} after {start}")


def _limited(source: Iterator[dt.datetime]) -> Iterator[dt.datetime]:
    """At most `_SEARCH_LIMIT` items (cronsim itself stops after 50 years)."""
    for _, found in zip(range(_SEARCH_LIMIT), source, strict=False):
        yield found


def jitter_of(schedule_id: str, nominal: dt.datetime, jitter_seconds: float) -> dt.timedelta:
    """The fixed offset of one occurrence: in ``[0, jitter)``, the same on every server."""
    if jitter_seconds <= 0:
        return dt.timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}|{nominal.isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return dt.timedelta(seconds=fraction * jitter_seconds)


@attrs.frozen
class Plan:
    """What one firing does: the occurrences to run (oldest first), how many it skips as
    missed, and the next pending occurrence with the time it is due."""

    run: tuple[dt.datetime, ...]
    missed: int
    next_at: dt.datetime
    next_due: dt.datetime


def plan(
    clock: Clock,
    policy: SchedulePolicy,
    *,
    schedule_id: str,
    pending: dt.datetime,
    now: dt.datetime,
    grace_seconds: float,
    limit: int = 100,
) -> Plan:
    """Which occurrences, from ``pending`` (the oldest not yet handled) on, fire at ``now``.

    An occurrence is *missed* if ``now`` is more than ``grace_seconds`` (plus the jitter)
    past it: the server was down or overloaded. Missed ones follow the catch-up policy;
    the others run once due. At most ``limit`` are planned; the rest stay pending.
    """
    missed_before = now - dt.timedelta(seconds=grace_seconds + policy.jitter_seconds)
    window_start = now - dt.timedelta(seconds=policy.catchup_window_seconds)
    run: list[dt.datetime] = []
    missed = 0
    moment = pending
    if moment < missed_before:
        if policy.catchup == "all":
            oldest = max(moment, clock.first_at_or_after(window_start))
            missed = clock.count(moment, oldest)
            moment = oldest
            while moment < missed_before and len(run) < limit:
                run.append(moment)
                moment = clock.after(moment)
        else:
            resume = clock.first_at_or_after(missed_before)
            latest = clock.last_before(missed_before) if policy.catchup == "latest" else None
            if latest is not None and latest >= max(moment, window_start):
                run.append(latest)
                missed = clock.count(moment, latest)
            else:
                missed = clock.count(moment, missed_before)
            moment = resume
    while len(run) < limit:
        due = moment + jitter_of(schedule_id, moment, policy.jitter_seconds)
        if due > now:
            break
        run.append(moment)
        moment = clock.after(moment)
    return Plan(tuple(run), missed, moment,
                moment + jitter_of(schedule_id, moment, policy.jitter_seconds))  # fmt: skip
