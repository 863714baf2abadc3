"""Occurrence times and firing plans, on a controlled clock: cron in a timezone across DST
changes, exact interval arithmetic, catch-up policies, jitter, and invalid definitions."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

import aiki
from aiki.protocol import (
    Clock,
    SchedulePolicy,
    ScheduleSpec,
    check_spec,
    describe,
    jitter_of,
    plan,
)

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ANCHOR = dt.datetime(2026, 1, 1, tzinfo=UTC)


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def following(clock: Clock, start: dt.datetime, count: int) -> list[dt.datetime]:
    found, moment = [], start
    for _ in range(count):
        moment = clock.after(moment)
        found.append(moment)
    return found


def test_a_daily_cron_keeps_its_local_time_across_both_dst_changes() -> None:
    """09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer."""
    clock = Clock(ScheduleSpec(cron="0 9 * * *", timezone="Europe/Berlin"), ANCHOR)
    spring = following(clock, at(2026, 3, 27), 4)
    assert spring == [
        at(2026, 3, 27, 8),
        at(2026, 3, 28, 8),
        at(2026, 3, 29, 7),
        at(2026, 3, 30, 7),
    ]
    autumn = following(clock, at(2026, 10, 23), 4)
    assert autumn == [at(2026, 10, 23, 7), at(2026, 10, 24, 7), at(2026, 10, 25, 8),
                      at(2026, 10, 26, 8)]  # fmt: skip
    assert {moment.astimezone(BERLIN).hour for moment in spring + autumn} == {9}


def test_a_time_skipped_by_spring_forward_fires_right_after_and_a_repeated_one_fires_once() -> None:
    """02:30 does not exist in Berlin on 2026-03-29 (runs at 03:00 CEST, as Debian cron
    does); it happens twice on 2026-10-25 (runs once, at the first)."""
    clock = Clock(ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin"), ANCHOR)
    spring = following(clock, at(2026, 3, 28, 12), 2)
    assert spring == [at(2026, 3, 29, 1), at(2026, 3, 30, 0, 30)]
    assert spring[0].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"
    autumn = following(clock, at(2026, 10, 24, 12), 2)
    assert autumn == [at(2026, 10, 25, 0, 30), at(2026, 10, 26, 1, 30)]
    assert autumn[0].astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CEST"


def test_an_hourly_cron_counts_real_hours_through_the_repeated_hour() -> None:
    """Every hour at :15 in New York on the fall-back night: no hour fires twice and
    time never goes backwards."""
    clock = Clock(ScheduleSpec(cron="15 * * * *", timezone="America/New_York"), ANCHOR)
    found = following(clock, at(2026, 11, 1, 4), 4)  # 00:00 EDT
    assert found == sorted(found)
    assert len(set(found)) == 4
    assert all(moment.minute == 15 for moment in found)


def test_last_before_and_count_agree_with_stepping() -> None:
    clock = Clock(ScheduleSpec(cron="*/10 * * * * *"), ANCHOR)  # every 10 s (6 fields)
    start, end = at(2026, 5, 1, 12), at(2026, 5, 1, 12, 5)
    assert clock.count(start, end) == 30  # [12:00:00, 12:05:00)
    assert clock.last_before(end) == at(2026, 5, 1, 12, 4, 50)
    assert clock.first_at_or_after(start) == start
    assert clock.after(start) == at(2026, 5, 1, 12, 0, 10)


def test_interval_occurrences_are_exact_multiples_of_the_interval_from_the_anchor() -> None:
    """No float drift: the 10 000th step of 0.1 s is exactly 1000 s after the anchor."""
    anchor = at(2026, 5, 1) + dt.timedelta(microseconds=123)
    clock = Clock(ScheduleSpec(every_seconds=0.1), anchor)
    moment = anchor
    for _ in range(10_000):
        moment = clock.after(moment)
    assert moment == anchor + dt.timedelta(seconds=1000)
    hourly = Clock(ScheduleSpec(every_seconds=3600), anchor)
    assert following(hourly, anchor, 3) == [anchor + dt.timedelta(hours=k) for k in (1, 2, 3)]
    assert hourly.count(anchor, anchor + dt.timedelta(hours=10)) == 9
    assert hourly.last_before(anchor + dt.timedelta(hours=10)) == anchor + dt.timedelta(hours=9)
    assert hourly.last_before(anchor + dt.timedelta(minutes=30)) is None


def _plan(policy: SchedulePolicy, *, down_until: dt.datetime, grace: float = 5.0):  # type: ignore[no-untyped-def]
    """Every minute from 12:00; the server was down from just after 12:00 until ``down_until``."""
    clock = Clock(ScheduleSpec(every_seconds=60), at(2026, 5, 1, 11, 59))
    return plan(clock, policy, schedule_id="s", pending=at(2026, 5, 1, 12), now=down_until,
                grace_seconds=grace)  # fmt: skip


def test_on_time_occurrences_run_once_due() -> None:
    planned = _plan(SchedulePolicy(), down_until=at(2026, 5, 1, 12, 0, 3))
    assert (planned.run, planned.missed) == ((at(2026, 5, 1, 12),), 0)
    assert planned.next_at == planned.next_due == at(2026, 5, 1, 12, 1)
    early = _plan(SchedulePolicy(), down_until=at(2026, 5, 1, 11, 59, 59))
    assert (early.run, early.next_at) == ((), at(2026, 5, 1, 12))


def test_catch_up_skip_runs_none_of_the_missed_occurrences() -> None:
    """Down from 12:00 to 12:10:02: 12:00..12:09 are missed, 12:10 is on time."""
    planned = _plan(SchedulePolicy(catchup="skip"), down_until=at(2026, 5, 1, 12, 10, 2))
    assert (planned.run, planned.missed) == ((at(2026, 5, 1, 12, 10),), 10)
    assert planned.next_at == at(2026, 5, 1, 12, 11)


def test_catch_up_latest_runs_only_the_most_recent_missed_occurrence() -> None:
    planned = _plan(SchedulePolicy(catchup="latest"), down_until=at(2026, 5, 1, 12, 10, 30))
    assert planned.run == (at(2026, 5, 1, 12, 10),)
    assert planned.missed == 10
    between = _plan(SchedulePolicy(catchup="latest"), down_until=at(2026, 5, 1, 12, 10, 2))
    assert between.run == (at(2026, 5, 1, 12, 9), at(2026, 5, 1, 12, 10))  # 12:10 on time
    assert between.missed == 9


def test_catch_up_all_runs_each_missed_occurrence_within_the_window_oldest_first() -> None:
    policy = SchedulePolicy(catchup="all", catchup_window_seconds=300)
    planned = _plan(policy, down_until=at(2026, 5, 1, 12, 10, 30))
    assert planned.run == tuple(at(2026, 5, 1, 12, minute) for minute in range(6, 11))
    assert planned.missed == 6  # 12:00..12:05 are older than the 5-minute window
    unlimited = _plan(SchedulePolicy(catchup="all"), down_until=at(2026, 5, 1, 12, 10, 30))
    assert len(unlimited.run) == 11
    assert unlimited.missed == 0
    clock = Clock(ScheduleSpec(every_seconds=1), at(2026, 5, 1))
    capped = plan(clock, SchedulePolicy(catchup="all"), schedule_id="s",
                  pending=at(2026, 5, 1, 0, 0, 1), now=at(2026, 5, 1, 1), grace_seconds=1,
                  limit=100)  # fmt: skip
    assert len(capped.run) == 100
    assert capped.next_at == at(2026, 5, 1, 0, 1, 41)  # the rest stays pending, due now


def test_a_long_outage_is_skipped_in_one_step() -> None:
    """A year of per-second occurrences: counted arithmetically, not enumerated."""
    clock = Clock(ScheduleSpec(every_seconds=1), at(2025, 5, 1))
    planned = plan(clock, SchedulePolicy(), schedule_id="s", pending=at(2025, 5, 1, 0, 0, 1),
                   now=at(2026, 5, 1), grace_seconds=60)  # fmt: skip
    assert planned.missed == 365 * 86400 - 61  # from 00:00:01 up to 23:59:00 the next year
    assert len(planned.run) == 61


def test_jitter_is_fixed_per_occurrence_and_within_bounds() -> None:
    moment = at(2026, 5, 1, 9)
    offsets = {jitter_of(f"s{index}", moment, 30.0) for index in range(200)}
    assert all(dt.timedelta(0) <= offset < dt.timedelta(seconds=30) for offset in offsets)
    assert len(offsets) > 150  # spread, not one value
    assert jitter_of("s1", moment, 30.0) == jitter_of("s1", moment, 30.0)
    clock = Clock(ScheduleSpec(every_seconds=60), at(2026, 5, 1, 8, 59))
    policy = SchedulePolicy(jitter_seconds=30)
    offset = jitter_of("s1", moment, 30.0)
    before = plan(clock, policy, schedule_id="s1", pending=moment, now=moment + offset
                  - dt.timedelta(microseconds=1), grace_seconds=5)  # fmt: skip
    assert before.run == ()
    assert before.next_due == moment + offset
    due = plan(clock, policy, schedule_id="s1", pending=moment, now=moment + offset,
               grace_seconds=5)  # fmt: skip
    assert due.run == (moment,)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *': Bad minute @ $.spec.cron"),
        ({"cron": "* * *"}, "Wrong number of fields @ $.spec.cron"),
        ({"cron": "0 0 30 2 *"}, "Bad day-of-month @ $.spec.cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({}, "give exactly one of cron and every_seconds"),
        ({"cron": "* * * * *", "every": 5}, "give exactly one of cron and every_seconds"),
        ({"every": 0}, "every_seconds must be at least 0.1"),
        ({"every": 60, "jitter": 60}, "jitter must be shorter than the interval"),
        ({"every": 60, "catchup": "some"}, "unknown catch-up policy 'some'"),
        ({"every": 60, "overlap": "queue"}, "unknown overlap policy 'queue'"),
    ],
)
def test_an_invalid_definition_is_refused_at_once_with_what_is_wrong(
    arguments: dict[str, object], problem: str
) -> None:
    with pytest.raises(aiki.ValidationError) as caught:
        aiki.schedule(**arguments)  # type: ignore[arg-type]
    assert any(problem in error for error in caught.value.errors), caught.value.errors
    assert str(caught.value).startswith("invalid schedule: ")


def test_descriptions_read_like_the_definition() -> None:
    assert describe(ScheduleSpec(every_seconds=300)) == "every 5 minutes"
    assert describe(ScheduleSpec(every_seconds=1.5)) == "every 1.5 seconds"
    assert describe(ScheduleSpec(every_seconds=1)) == "every 1 second"
    assert describe(ScheduleSpec(every_seconds=86400)) == "every 1 day"
    words = describe(ScheduleSpec(cron="0 9 * * *", timezone="Europe/Berlin"))
    assert words.endswith("(Europe/Berlin)")
    assert "9" in words
    check_spec(ScheduleSpec(cron="0 9 * * MON-FRI", timezone="Asia/Tokyo"), SchedulePolicy())
