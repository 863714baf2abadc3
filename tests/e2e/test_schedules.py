"""Schedules end to end, with real server and worker processes: runs fire and complete,
overlap policies against long-running workflows, catch-up after the server was down, two
servers firing the same schedules, and the ``aiki schedules`` CLI."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import subprocess
import time
import uuid

import httpx
import psycopg
import trio

import aiki
from tests._deadline import deadline
from tests._processes import start_aiki
from tests._waiting import wait_until

from . import schedule_flows as flows
from .conftest import ONE_SERVER, THREE_SERVERS, Cluster
from .test_cli_ops import cli, ok_json

WORKER_TARGET = "tests.e2e.schedule_flows:schedule_worker"
TOPOLOGIES = (ONE_SERVER, THREE_SERVERS)
GRACE = 1.0
SERVER_ARGS = ["--schedule-grace", str(GRACE), "--timer-scan", "0.5"]


def _query(cluster: Cluster, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def runs_of(cluster: Cluster, schedule_id: str) -> list[tuple[object, ...]]:
    """(occurrence, status, output, created_at, updated_at, id) by occurrence."""
    return await trio.to_thread.run_sync(_query, cluster, (
        "SELECT occurrence, status, output, created_at, updated_at, id::text FROM aiki_runs"
        " WHERE schedule_id = %s ORDER BY occurrence"), (schedule_id,))  # fmt: skip


def gaps(runs: list[tuple[object, ...]], every: float) -> list[int]:
    """Occurrences between consecutive runs, in intervals (1 = none skipped)."""
    return [round((b[0] - a[0]).total_seconds() / every) for a, b in itertools.pairwise(runs)]  # type: ignore[operator]


async def count_where(cluster: Cluster, schedule_id: str, condition: str, count: int) -> bool:
    rows = await trio.to_thread.run_sync(_query, cluster, (
        f"SELECT count(*) FROM aiki_runs WHERE schedule_id = %s AND {condition}"),
        (schedule_id,))  # fmt: skip
    return int(rows[0][0]) >= count  # type: ignore[call-overload]


@deadline(90)
async def test_an_interval_schedule_fires_runs_that_complete(cluster: Cluster) -> None:
    """From the SDK: every 0.5 s, five runs complete with the schedule's input, each
    knowing its occurrence (``run.occurrence``); the occurrences are consecutive; show
    reports them; deactivate stops it."""
    async with cluster.client() as client:
        every = aiki.schedule(every=dt.timedelta(seconds=0.5))
        handle = await every.activate(client, flows.stamped, 14)
        assert handle.created
        again = await every.activate(client, flows.stamped, 14)
        assert (again.id, again.created) == (handle.id, False)  # idempotent

        with trio.fail_after(30):
            await wait_until(lambda: count_where(cluster, handle.id, "status = 'completed'", 5))
        details = await handle.describe(recent_runs=50)
        await handle.deactivate()
    runs = await runs_of(cluster, handle.id)
    completed = [run for run in runs if run[1] == "completed"]
    assert [run[2] for run in completed] == [f"42 at {run[0].isoformat()}" for run in completed]  # type: ignore[attr-defined]
    assert gaps(runs, 0.5) == [1] * (len(runs) - 1)
    assert details.schedule.fired >= len(completed)
    assert {run.schedule_id for run in details.recent_runs} == {handle.id}
    assert details.schedule.description == "every 0.5 seconds"


@deadline(120)
async def test_overlap_skip_never_runs_two_at_once_with_a_long_running_workflow(
    cluster: Cluster,
) -> None:
    """Runs take 2 s, the schedule fires every 0.4 s: each run starts only after the one
    before ended; the occurrences in between are skipped."""
    async with cluster.client() as client:
        skipping = aiki.schedule(every=dt.timedelta(seconds=0.4), overlap="skip")
        handle = await skipping.activate(client, flows.busy_flow, 2.0)
        with trio.fail_after(60):
            await wait_until(lambda: count_where(cluster, handle.id, "status = 'completed'", 3))
        info = await handle.deactivate()
    runs = await runs_of(cluster, handle.id)
    for earlier, later in itertools.pairwise(runs):
        assert earlier[1] == "completed"
        assert later[3] >= earlier[4]  # type: ignore[operator]  # started after it ended
    assert all(gap >= 4 for gap in gaps(runs, 0.4))  # ~5 intervals per 2 s run
    assert info.skipped >= 3 * (len(runs) - 1)
    assert info.fired == len(runs)


@deadline(120)
async def test_overlap_cancel_previous_stops_the_running_workflow_on_its_worker(
    cluster: Cluster,
) -> None:
    """Runs would take 60 s; every occurrence (1 s) cancels the running one, whose task
    is stopped on its worker at once, and starts the next."""
    async with cluster.client() as client:
        cancelling = aiki.schedule(every=dt.timedelta(seconds=1), overlap="cancel_previous")
        handle = await cancelling.activate(client, flows.busy_flow, 60.0)
        with trio.fail_after(60):
            await wait_until(lambda: count_where(cluster, handle.id, "status = 'cancelled'", 2))
        await handle.deactivate()
        runs = await runs_of(cluster, handle.id)
        await client.cancel(str(runs[-1][5]))
    first, second = str(runs[0][5]), str(runs[1][5])

    async def stopped_on_the_worker() -> bool:
        rows = await trio.to_thread.run_sync(_query, cluster, (
            "SELECT count(*) FROM e2e_effects WHERE key = ANY(%s) AND task = 'hold cancelled'"),
            ([first, second],))  # fmt: skip
        return rows[0][0] == 2

    with trio.fail_after(30):
        await wait_until(stopped_on_the_worker)
    assert [run[1] for run in runs[:2]] == ["cancelled", "cancelled"]
    assert gaps(runs, 1.0)[:2] == [1, 1]


@deadline(60)
async def test_the_schedules_cli_lists_shows_and_controls(cluster: Cluster) -> None:
    """Activate from the CLI, then list, show, pause, resume, deactivate: tables, --json,
    and error exits (bad cron: 1 and nothing stored; unknown schedule: 3)."""
    reference = f"cli-{uuid.uuid4().hex[:6]}"
    command = ("schedules", "activate", flows.tick.workflow, "1", "5", "--cron", "0 9 * * MON-FRI",
               "--timezone", "Europe/Berlin", "--overlap", "skip", "--reference-id", reference,
               "--json")  # fmt: skip
    activated = ok_json(await cli(cluster, *command))
    assert isinstance(activated, dict)
    schedule = activated["schedule"]
    schedule_id = schedule["id"]
    assert (activated["created"], schedule["policy"]["overlap"]) == (True, "skip")

    table, shown, as_json = await _clis(cluster, [
        ("schedules", "list", "--workflow", flows.tick.workflow),
        ("schedules", "show", schedule_id),
        ("schedules", "show", reference, "--json"),
    ])  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "WORKFLOW", "STATUS"]
    assert any(schedule_id in line and "active" in line for line in table.stdout.splitlines())
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^when +At 09:00.* \(Europe/Berlin\)$", shown.stdout, re.MULTILINE)
    assert re.search(r"^next fire times$", shown.stdout, re.MULTILINE)
    details = ok_json(as_json)
    assert isinstance(details, dict)
    upcoming = [dt.datetime.fromisoformat(at) for at in details["upcoming"]]
    assert len(upcoming) == 5
    assert all(moment.weekday() < 5 for moment in upcoming)

    paused = ok_json(await cli(cluster, "schedules", "pause", schedule_id, "--json"))
    assert isinstance(paused, dict)
    assert paused["status"] == "paused"
    resumed = await cli(cluster, "schedules", "resume", schedule_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "active" in resumed.stdout
    ended = ok_json(await cli(cluster, "schedules", "deactivate", schedule_id, "--json"))
    assert isinstance(ended, dict)
    assert ended["status"] == "deactivated"

    bad, usage = await _clis(cluster, [
        ("schedules", "activate", flows.tick.workflow, "1", "5", "--cron", "0 25 * * *",
         "--reference-id", f"{reference}-bad"),
        ("schedules", "activate", flows.tick.workflow, "1", "5"),
    ])  # fmt: skip
    assert bad.returncode == 1
    assert "invalid cron expression '0 25 * * *': Bad hour" in bad.stderr
    assert usage.returncode == 2  # neither --cron nor --every
    missing = await cli(cluster, "schedules", "show", f"{reference}-bad")  # (nothing stored)
    assert missing.returncode == 3
    assert "no schedule" in missing.stderr


async def _clis(
    cluster: Cluster, commands: list[tuple[str, ...]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI commands at once; their results, in order."""
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    async def run(index: int, args: tuple[str, ...]) -> None:
        results[index] = await cli(cluster, *args)

    async with trio.open_nursery() as nursery:
        for index, args in enumerate(commands):
            nursery.start_soon(run, index, args)
    return [results[index] for index in range(len(commands))]


@deadline(150)
async def test_catch_up_after_the_server_was_down(cluster: Cluster) -> None:
    """Three schedules every second, catch-up skip / latest / all; the server is killed and
    stays down ~5 s. At its first firing after the restart (time R): ``all`` runs every
    missed occurrence (no gap), ``latest`` only the last one before R - grace, ``skip``
    none of them (every run it starts is on time)."""
    async with cluster.client() as client:
        handles = {
            policy: await aiki.schedule(every=1.0, catchup=policy).activate(client, flows.tick, 1)
            for policy in ("skip", "latest", "all")
        }  # fmt: skip
    for handle in handles.values():
        with trio.fail_after(30):
            await wait_until(functools.partial(count_where, cluster, handle.id, "true", 2))
    ports = cluster.kill_servers()
    killed_at = time.time()
    await trio.sleep(5.0)  # the outage under test: occurrences fall due with no server up
    await trio.to_thread.run_sync(cluster.start_servers, ports)
    for handle in handles.values():
        with trio.fail_after(30):
            restarted = f"created_at > to_timestamp({killed_at + 5})"
            await wait_until(functools.partial(count_where, cluster, handle.id, restarted, 2))
    async with cluster.client() as client:
        for handle in handles.values():
            await client.deactivate_schedule(handle.id)
        infos = {policy: await client.describe_schedule(handle.id)
                 for policy, handle in handles.items()}  # fmt: skip

    def after_restart(policy: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        """(all runs, the runs of the first firing after the restart)."""
        runs = [run for run in everything[policy]]
        restart = min(run[3] for run in runs if run[3].timestamp() > killed_at)  # type: ignore[attr-defined]
        return runs, [run for run in runs if run[3] == restart]

    everything = {policy: await runs_of(cluster, handle.id) for policy, handle in handles.items()}

    def lateness(run: tuple[object, ...]) -> float:
        return (run[3] - run[0]).total_seconds()  # type: ignore[operator]

    runs, first_firing = after_restart("all")
    assert gaps(runs, 1.0) == [1] * (len(runs) - 1)  # nothing lost
    assert sum(1 for run in first_firing if lateness(run) > GRACE) >= 3  # caught up
    assert infos["all"].schedule.skipped == 0

    runs, first_firing = after_restart("skip")
    assert all(lateness(run) <= GRACE for run in first_firing)
    assert max(gaps(runs, 1.0)) >= 4  # the outage: ~5 occurrences skipped
    assert infos["skip"].schedule.skipped >= 3

    runs, first_firing = after_restart("latest")
    late = [run for run in first_firing if lateness(run) > GRACE]
    assert len(late) == 1
    assert lateness(late[0]) - 1.0 <= GRACE  # the next occurrence was not missed: the latest
    assert max(gaps(runs, 1.0)) >= 3
    assert infos["latest"].schedule.skipped >= 2


@deadline(150)
async def test_two_servers_never_fire_an_occurrence_twice(cluster: Cluster) -> None:
    """The cluster's servers and one more (fresh processes, same database) fire three fast
    schedules: every occurrence runs once, none is lost, and the servers' counters add up
    to the runs."""
    await trio.to_thread.run_sync(cluster.start_servers, cluster.kill_servers())
    other = start_aiki(["server", "--port", "0", *cluster.server_args],
                       cluster.logs / f"server-b-{uuid.uuid4().hex[:6]}.log",
                       {"AIKI_DATABASE_URL": cluster.database_url,
                        "AIKI_REDIS_URL": cluster.redis_url})  # fmt: skip
    try:
        other_url = (await trio.to_thread.run_sync(
            lambda: other.wait_ready(r"listening on (\S+)"))).group(1)  # fmt: skip
        async with (
            cluster.client() as client,
            aiki.Client(other_url, api_key=cluster.keys["client"]) as second,
        ):
            handles = [await aiki.schedule(every=0.2).activate(client, flows.tick, 1),
                       await aiki.schedule(every=0.25).activate(second, flows.tick, 2),
                       await aiki.schedule(every=0.3, overlap="skip").activate(client, flows.tick,
                                                                               3)]  # fmt: skip
            for handle in handles:
                with trio.fail_after(60):
                    await wait_until(functools.partial(count_where, cluster, handle.id, "true", 15))
            for handle in handles:
                await client.deactivate_schedule(handle.id)
        total = 0
        for handle, every in zip(handles, (0.2, 0.25, 0.3), strict=True):
            runs = await runs_of(cluster, handle.id)
            assert len({run[0] for run in runs}) == len(runs)  # no occurrence twice
            if every != 0.3:  # overlap skip may skip one; the others must not have gaps
                assert gaps(runs, every) == [1] * (len(runs) - 1)
            total += len(runs)
        fired = []
        async with httpx.AsyncClient() as http:
            for url in (*cluster.urls, other_url):
                text = (await http.get(f"{url}/metrics", headers=cluster.headers("admin"))).text
                found = re.search(r'^aiki_schedule_occurrences_total\{outcome="started"\} (\S+)$',
                                  text, re.MULTILINE)  # fmt: skip
                fired.append(int(float(found.group(1))) if found else 0)
        assert sum(fired) == total, fired  # each run was started by exactly one server
        print(f"occurrences fired per server: {fired}")
    finally:
        other.stop()
    for log in cluster.logs.glob("server-*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log
