"""Schedules over real HTTP against a real server and PostgreSQL (no workers: the runs a
schedule starts stay queued, which is all these tests need): firing, overlap policies,
idempotent activation, pause/resume/deactivate, listing, bad input, and exactly-once
firing when many transactions race for the same occurrences."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import uuid
import zoneinfo

import attrs
import psycopg
import pytest
import trio

import aiki
from aiki.server._scheduler import fire_schedules
from tests._deadline import deadline
from tests._waiting import wait_until
from transport.postgres import open_postgres_store

from .conftest import Api, open_api, register

ORDER = {"id": "o-1", "quantity": 2}


def _query(pg_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql, params).fetchall()


async def query(pg_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    return await trio.to_thread.run_sync(_query, pg_url, sql, params)


async def runs_of(pg_url: str, schedule_id: str) -> list[tuple[object, ...]]:
    """(occurrence, status, stop_reason) of the schedule's runs, oldest occurrence first."""
    return await query(pg_url, "SELECT occurrence, status, stop_reason FROM aiki_runs WHERE "
                       "schedule_id = %s ORDER BY occurrence", (schedule_id,))  # fmt: skip


def activation(workflow: str, **spec_and_policy: object) -> dict[str, object]:
    spec = {key: spec_and_policy.pop(key) for key in ("cron", "timezone", "every_seconds")
            if key in spec_and_policy}  # fmt: skip
    return {"workflow": workflow, "version": "1.0", "input": ORDER, "spec": spec,
            "policy": spec_and_policy}  # fmt: skip


async def activate(api: Api, workflow: str, **spec_and_policy: object) -> dict[str, object]:
    reply = await api.ok("activate_schedule", activation(workflow, **spec_and_policy))
    schedule = reply["schedule"]
    assert isinstance(schedule, dict)
    return schedule


def steps(occurrences: list[dt.datetime], every: float) -> list[float]:
    """Gaps between consecutive occurrences, in intervals."""
    return [round((b - a).total_seconds() / every, 6) for a, b in itertools.pairwise(occurrences)]


@deadline(60)
async def test_an_interval_schedule_fires_runs_at_each_occurrence(
    api: Api, workflow: str, pg_url: str
) -> None:
    """Every 0.2 s: runs appear one per occurrence, with consecutive occurrence times, each
    run carrying its schedule; show and list report counts, next times and the runs."""
    await register(api, workflow)
    schedule = await activate(api, workflow, every_seconds=0.2)
    assert (schedule["status"], schedule["fired"], schedule["description"]) == (
        "active",
        0,
        "every 0.2 seconds",
    )

    async def fired(count: int) -> bool:
        return len(await runs_of(pg_url, str(schedule["id"]))) >= count

    with trio.fail_after(20):
        await wait_until(lambda: fired(5))
    paused = await api.ok("pause_schedule", {"schedule_id": schedule["id"]})
    assert (paused["status"], paused["next_fire_at"]) == ("paused", None)
    runs = await runs_of(pg_url, str(schedule["id"]))
    occurrences = [row[0] for row in runs]
    assert steps(occurrences, 0.2) == [1.0] * (len(runs) - 1)  # none missed, none twice
    assert {row[1] for row in runs} == {"queued"}

    details = await api.ok("get_schedule", {"schedule_id": schedule["id"], "recent_runs": 3})
    shown = details["schedule"]
    assert shown["fired"] == len(runs)
    assert shown["skipped"] == 0
    recent = details["recent_runs"]
    assert [dt.datetime.fromisoformat(run["occurrence"]) for run in recent] == occurrences[::-1][:3]
    assert all(run["schedule_id"] == schedule["id"] for run in recent)
    assert details["upcoming"] == []  # paused: nothing upcoming

    resumed = await api.ok("resume_schedule", {"schedule_id": schedule["id"]})
    assert resumed["status"] == "active"
    assert dt.datetime.fromisoformat(resumed["next_fire_at"]) > occurrences[-1]
    with trio.fail_after(20):
        await wait_until(lambda: fired(len(runs) + 2))
    details = await api.ok("get_schedule", {"schedule_id": schedule["id"], "upcoming": 3})
    upcoming = [dt.datetime.fromisoformat(moment) for moment in details["upcoming"]]
    assert steps(upcoming, 0.2) == [1.0, 1.0]

    gone = await api.ok("deactivate_schedule", {"schedule_id": schedule["id"]})
    assert (gone["status"], gone["next_fire_at"]) == ("deactivated", None)
    again = await api.ok("deactivate_schedule", {"schedule_id": schedule["id"]})
    assert again["status"] == "deactivated"  # idempotent
    status, body = await api.call("resume_schedule", {"schedule_id": schedule["id"]})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")

    page = await api.ok("list_schedules", {"workflow": workflow})
    assert [found["id"] for found in page["schedules"]] == [schedule["id"]]
    none = await api.ok("list_schedules", {"workflow": workflow, "statuses": ["active"]})
    assert none["schedules"] == []


@deadline(60)
async def test_overlap_skip_starts_nothing_while_a_run_is_active_even_a_stalled_one(
    pg_url: str, redis_url: str, workflow: str
) -> None:
    """No worker takes the first run: it stays queued, then becomes stalled; occurrences
    meanwhile are skipped. Once it is cancelled, the next occurrence starts a run."""
    async with open_api(pg_url, redis_url, stall_after_seconds=0.5, timer_scan_seconds=0.2) as api:
        await register(api, workflow)
        schedule = await activate(api, workflow, every_seconds=0.2, overlap="skip")
        schedule_id = str(schedule["id"])

        async def stalled_and_skipping() -> bool:
            details = await api.ok("get_schedule", {"schedule_id": schedule_id})
            runs = details["recent_runs"]
            return (len(runs) == 1 and runs[0]["status"] == "stalled"
                    and details["schedule"]["skipped"] >= 3)  # fmt: skip

        with trio.fail_after(20):
            await wait_until(stalled_and_skipping)
        first = (await runs_of(pg_url, schedule_id))[0]
        await api.ok(
            "cancel_run",
            {
                "run_id": str(
                    (
                        await query(
                            pg_url,
                            "SELECT id FROM aiki_runs WHERE schedule_id = %s",
                            (schedule_id,),
                        )
                    )[0][0]
                )
            },
        )

        async def second_started() -> bool:
            return len(await runs_of(pg_url, schedule_id)) == 2

        with trio.fail_after(20):
            await wait_until(second_started)
        runs = await runs_of(pg_url, schedule_id)
        assert runs[0][:2] == (first[0], "cancelled")
        assert (runs[1][1], len(runs)) == ("queued", 2)
        assert steps([run[0] for run in runs], 0.2)[0] >= 3  # the skipped ones in between
        details = await api.ok("get_schedule", {"schedule_id": schedule_id})
        assert details["schedule"]["fired"] == 2


@deadline(60)
async def test_overlap_cancel_previous_cancels_the_active_run_before_starting_the_next(
    api: Api, workflow: str, pg_url: str
) -> None:
    await register(api, workflow)
    schedule = await activate(api, workflow, every_seconds=0.3, overlap="cancel_previous")
    schedule_id = str(schedule["id"])

    async def four() -> bool:
        return len(await runs_of(pg_url, schedule_id)) >= 4

    with trio.fail_after(20):
        await wait_until(four)
    await api.ok("deactivate_schedule", {"schedule_id": schedule_id})
    runs = await runs_of(pg_url, schedule_id)
    assert [row[1] for row in runs] == ["cancelled"] * (len(runs) - 1) + ["queued"]
    for (_, _, reason), (following, _, _) in itertools.pairwise(runs):
        assert reason == f"cancelled by schedule {schedule_id}: occurrence {following.isoformat()}"
    history = await query(pg_url, "SELECT count(*) FROM aiki_transitions t JOIN aiki_runs r ON "
                          "r.id = t.run_id WHERE r.schedule_id = %s AND t.to_status = 'cancelled'",
                          (schedule_id,))  # fmt: skip
    assert history[0][0] == len(runs) - 1


@deadline(30)
async def test_activation_is_idempotent_and_a_reference_id_guards_the_definition(
    api: Api, workflow: str
) -> None:
    await register(api, workflow)
    body = activation(workflow, cron="0 9 * * *", timezone="Europe/Berlin")
    first = await api.ok("activate_schedule", body)
    again = await api.ok("activate_schedule", body)
    assert first["created"] is True
    assert again["created"] is False
    assert again["schedule"]["id"] == first["schedule"]["id"]
    next_fire = dt.datetime.fromisoformat(first["schedule"]["next_fire_at"])
    assert next_fire.astimezone(dt.UTC).hour in (7, 8)  # 09:00 Berlin
    other_input = {**body, "input": {"id": "o-2", "quantity": 1}}
    different = await api.ok("activate_schedule", other_input)
    assert different["created"] is True  # another definition, another schedule

    named = {**body, "reference_id": "daily-report"}
    created = await api.ok("activate_schedule", named)
    status, error = await api.call(
        "activate_schedule", {**other_input, "reference_id": "daily-report"}
    )
    assert (status, error["error"]["code"]) == (409, "schedule_conflict")
    assert created["schedule"]["id"] in error["error"]["message"]
    kept = await api.ok("activate_schedule", {**other_input, "reference_id": "daily-report",
                                              "conflict": "return_existing"})  # fmt: skip
    assert (kept["created"], kept["schedule"]["id"]) == (False, created["schedule"]["id"])
    found = await api.ok("get_schedule", {"reference_id": "daily-report"})
    assert found["schedule"]["id"] == created["schedule"]["id"]
    assert len(found["upcoming"]) == 5

    await api.ok("deactivate_schedule", {"schedule_id": created["schedule"]["id"]})
    replaced = await api.ok("activate_schedule", {**other_input, "reference_id": "daily-report"})
    assert replaced["created"] is True
    assert replaced["schedule"]["id"] != created["schedule"]["id"]


@deadline(30)
async def test_invalid_definitions_get_a_clear_error_and_nothing_is_stored(
    api: Api, workflow: str, pg_url: str
) -> None:
    await register(api, workflow)
    cases = [
        (activation(workflow, cron="61 * * * *"), 422, "invalid cron expression '61 * * * *'"),
        (activation(workflow, cron="0 9 * * *", timezone="Nowhere/City"), 422,
         "unknown timezone 'Nowhere/City'"),
        (activation(workflow, every_seconds=0), 422, "every_seconds must be at least"),
        (activation(workflow, every_seconds=60, overlap="queue_all"), 400, "queue_all"),
        ({**activation(workflow, every_seconds=60), "input": {"id": 1}}, 422,
         "does not match its type"),
        ({**activation(workflow, every_seconds=60), "version": "9"}, 404, "not registered"),
        ({**activation(workflow, every_seconds=60), "options": {"reference_id": "x"}}, 400,
         "no reference_id or trigger"),
    ]  # fmt: skip
    for body, expected_status, message in cases:
        status, reply = await api.call("activate_schedule", body)
        assert status == expected_status, (body, reply)
        assert message in reply["error"]["message"], reply
    assert await query(pg_url, "SELECT count(*) FROM aiki_schedules") == [(0,)]
    status, reply = await api.call("get_schedule", {"schedule_id": "nope"})
    assert (status, reply["error"]["code"]) == (404, "schedule_not_found")
    status, reply = await api.call("pause_schedule", {"schedule_id": "0" * 32})
    assert (status, reply["error"]["code"]) == (404, "schedule_not_found")
    status, reply = await api.call("list_schedules", {"cursor": "garbage"})
    assert status == 400


@deadline(60)
async def test_racing_firings_start_each_occurrence_exactly_once(
    api: Api, workflow: str, pg_url: str
) -> None:
    """A schedule 300 occurrences behind (catch-up ``all``) is fired by the server's
    scheduler and by 8 more transactions at once, in rounds: PostgreSQL's row lock lets
    one of them start each occurrence; none is lost or started twice."""
    await register(api, workflow)
    schedule = await activate(api, workflow, every_seconds=1, catchup="all")
    schedule_id = str(schedule["id"])
    await query(pg_url, "UPDATE aiki_schedules SET anchor = anchor - interval '300 s', "
                "next_at = next_at - interval '300 s', due_at = due_at - interval '300 s' "
                "WHERE id = %s RETURNING id", (schedule_id,))  # fmt: skip
    fire = functools.partial(fire_schedules, grace_seconds=0.5)
    started = 0
    async with open_postgres_store(pg_url, max_size=8) as store:

        async def one() -> None:
            nonlocal started
            started += len((await store.transact(fire)).started)

        for _ in range(6):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(one)
    await api.ok("pause_schedule", {"schedule_id": schedule_id})
    runs = await runs_of(pg_url, schedule_id)
    occurrences = [row[0] for row in runs]
    assert len(occurrences) >= 300
    assert steps(occurrences, 1.0) == [1.0] * (len(occurrences) - 1)
    details = await api.ok("get_schedule", {"schedule_id": schedule_id})
    assert details["schedule"]["fired"] == len(occurrences)
    assert details["schedule"]["skipped"] == 0
    assert started > 0  # the racing transactions took part (the server fired the rest)


@deadline(30)
async def test_a_schedule_that_cannot_be_planned_is_postponed_without_stopping_the_others(
    api: Api, workflow: str, pg_url: str
) -> None:
    """A corrupted definition (here: written behind the server's back) fails its own plan
    only: the firing goes on for the other schedules and tries the bad one a minute later."""
    await register(api, workflow)
    good = await activate(api, workflow, every_seconds=60)
    bad = await activate(api, workflow, every_seconds=61)
    await query(pg_url, "UPDATE aiki_schedules SET due_at = now() - interval '1 s', "
                "next_at = now() - interval '1 s' RETURNING id")  # fmt: skip
    await query(pg_url, """UPDATE aiki_schedules SET spec = '{"cron": "not cron"}'"""
                " WHERE id = %s RETURNING id", (bad["id"],))  # fmt: skip
    async with open_postgres_store(pg_url, max_size=1) as store:
        fired = await store.transact(functools.partial(fire_schedules, grace_seconds=60))
    # (The server's own scheduler may have fired first at a scan: either way, exactly once.)
    assert {run.schedule_id for run in fired.started} <= {good["id"]}
    assert await query(pg_url, "SELECT fired FROM aiki_schedules WHERE id = %s",
                       (good["id"],)) == [(1,)]  # fmt: skip
    rows = await query(pg_url, "SELECT due_at - now(), fired FROM aiki_schedules WHERE id = %s",
                       (bad["id"],))  # fmt: skip
    postponed, count = rows[0]
    assert dt.timedelta(seconds=55) < postponed <= dt.timedelta(seconds=60)  # type: ignore[operator]
    assert count == 0


@attrs.frozen
class Order:
    id: str
    quantity: int


@deadline(30)
async def test_the_sdk_activates_inspects_and_controls_schedules(api: Api, workflow: str) -> None:
    """`aiki.schedule(...).activate` and the handle and client methods, with typed errors."""
    await register(api, workflow)
    flow = aiki.workflow(workflow)

    @flow.version("1.0")
    async def handler(run: aiki.Run[Order], order: Order) -> None:
        """Never executed here (no worker): only its name, version and input type count."""

    nightly = aiki.schedule(cron="0 2 * * *", timezone="America/New_York", overlap="skip",
                            catchup="latest", catchup_window=dt.timedelta(hours=6),
                            jitter=dt.timedelta(minutes=5))  # fmt: skip
    assert repr(nightly).startswith("<aiki schedule At 02:00")
    async with aiki.Client(api.url, api_key=api.keys["client"]) as client:
        handle = await nightly.activate(client, handler.with_(pool="night"), Order("o-1", 2),
                                        reference_id=f"{workflow}-nightly")  # fmt: skip
        info = handle.info
        assert info is not None
        assert (info.status, info.options.pool, info.policy.catchup) == ("active", "night",
                                                                         "latest")  # fmt: skip
        assert info.policy.catchup_window_seconds == 6 * 3600
        assert info.next_fire_at is not None
        assert info.next_due_at is not None
        assert dt.timedelta(0) <= info.next_due_at - info.next_fire_at < dt.timedelta(minutes=5)
        local = info.next_fire_at.astimezone(zoneinfo.ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (2, 0)

        assert (await handle.pause()).status == "paused"
        assert (await handle.refresh()).status == "paused"
        assert (await handle.resume()).status == "active"
        page = await client.list_schedules(workflow=workflow, statuses=("active",))
        assert [found.id for found in page.schedules] == [handle.id]
        details = await client.describe_schedule(reference_id=f"{workflow}-nightly", upcoming=3)
        assert len(details.upcoming) == 3
        assert details.recent_runs == ()

        with pytest.raises(aiki.ScheduleConflictError, match="another definition"):
            await aiki.schedule(cron="0 3 * * *").activate(
                client, handler, Order("o-1", 2), reference_id=f"{workflow}-nightly"
            )
        with pytest.raises(aiki.ScheduleNotFoundError):
            await client.schedule_handle(str(uuid.uuid4())).refresh()
        with pytest.raises(aiki.ValidationError):
            await nightly.activate(client, handler, {"id": 5})  # not an Order
        with pytest.raises(ValueError, match="cannot carry a reference_id"):
            await nightly.activate(client, handler.with_(reference_id="r"), Order("o", 1))
        assert (await handle.deactivate()).status == "deactivated"
