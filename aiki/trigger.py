"""Delayed starts: ``version.with_(trigger=aiki.trigger.after(minutes=5)).start(...)``.

A run started with a trigger is ``scheduled`` until its time comes; the server's timers
then queue it. The time is kept in PostgreSQL, so server restarts lose nothing.
"""

from __future__ import annotations

import datetime as dt

import attrs


@attrs.frozen
class Trigger:
    """When a run should be queued: ``delay_seconds`` from now, or ``at`` a time."""

    delay_seconds: float | None = None
    at: dt.datetime | None = None


def after(
    duration: dt.timedelta | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
) -> Trigger:
    """Queue the run after this long."""
    total = (duration.total_seconds() if duration else 0) + seconds + minutes * 60 + (
        hours * 3600) + days * 86400  # fmt: skip
    if total < 0:
        raise ValueError("a start delay cannot be negative")
    return Trigger(delay_seconds=total)


def at(when: dt.datetime) -> Trigger:
    """Queue the run at ``when`` (a timezone-aware datetime)."""
    if when.tzinfo is None:
        raise ValueError("give a timezone-aware datetime, e.g. datetime.now(timezone.utc)")
    return Trigger(at=when)
