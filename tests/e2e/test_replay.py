"""Concurrent branches and races replay exactly, end to end: the four handler shapes that
broke replay (a limiter shared by branches starting children, a sleep racing an event
every month, a sliding window of children, parallel pipelines of a child then a task),
each run on real processes with the parents' workers SIGKILLed every time the run is
suspended, so every replay happens in a fresh worker.

``AIKI_REPLAY_REPEAT=20`` runs each shape 20 times in a row (the suite runs each once).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator

import psycopg
import pytest
import trio

import aiki
from tests._deadline import deadline
from tests._processes import AikiProcess, stop_all
from tests.e2e.conftest import Cluster

from . import replay_flows as flows

WORKER_TARGET = "tests.e2e.replay_flows:parents"
CHILDREN_TARGET = "tests.e2e.replay_flows:children"
SERVER_ARGS = ["--claim-timeout", "3"]
WORKER_ARGS = ["--heartbeat", "0.3", "--claim-idle", "3"]
REPEAT = int(os.environ.get("AIKI_REPLAY_REPEAT", "1"))
SUSPENDED = ("sleeping", "awaiting_event", "awaiting_child_workflow")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def children(cluster: Cluster) -> Iterator[AikiProcess]:
    """A worker of the child workflow (never killed: children keep going meanwhile)."""
    worker, _ = cluster.start_worker(CHILDREN_TARGET)
    yield worker
    stop_all([worker])


def _query(cluster: Cluster, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def _q(
    cluster: Cluster, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return await trio.to_thread.run_sync(_query, cluster, sql, params)


def _restart_parents(cluster: Cluster) -> None:
    """SIGKILL the parents' workers; start two new ones (waiting until they serve)."""
    for worker in cluster.workers:
        worker.kill()
    cluster.workers = [cluster.spawn_worker(WORKER_TARGET, cluster.server_urls) for _ in range(2)]
    for worker in cluster.workers:
        worker.wait_ready(r"aiki worker (\S+) serving")


async def _run_with_kills(
    cluster: Cluster,
    handle: aiki.RunHandle[typing.Any],
    on_suspended: typing.Callable[[], typing.Awaitable[None]] | None = None,
) -> tuple[aiki.RunInfo, int]:
    """Until the run ends: each time it is suspended (at a revision not seen before), kill
    the parents' workers and start new ones, then call ``on_suspended``. Returns the
    ended run and how many times the workers were killed."""
    kills, seen = 0, -1
    while True:
        info = await handle.refresh()
        if info.status in ("completed", "failed", "cancelled"):
            return info, kills
        if info.status in SUSPENDED and info.revision != seen:
            seen = info.revision
            await trio.to_thread.run_sync(_restart_parents, cluster)
            kills += 1
            if on_suspended is not None:
                await on_suspended()
        await trio.sleep(0.02)


def _max_open(rows: list[tuple[object, ...]]) -> int:
    """The most children open at once, from (started, ended) times."""
    edges = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows])  # type: ignore[list-item]
    most = current = 0
    for _, delta in edges:
        current += delta
        most = max(most, current)
    return most


async def _children(cluster: Cluster, parent: str) -> list[tuple[object, ...]]:
    """Each child's (created, ended) times."""
    return await _q(cluster, """
        SELECT r.created_at, max(t.at) FROM aiki_runs r
        JOIN aiki_transitions t ON t.run_id = r.id AND t.to_status = 'completed'
        WHERE r.parent_id = %s GROUP BY r.id, r.created_at""", (parent,))  # fmt: skip


async def _no_divergence(cluster: Cluster, info: aiki.RunInfo) -> None:
    assert info.status == "completed", info.error
    failed = await _q(cluster, "SELECT count(*) FROM aiki_transitions WHERE run_id = %s"
                      " AND to_status IN ('failed', 'awaiting_retry')", (info.id,))  # fmt: skip
    assert failed == [(0,)]


@deadline(240 * REPEAT)
async def test_a_limiter_shared_by_twelve_branches_starting_children(
    cluster: Cluster, children: AikiProcess
) -> None:
    """12 branches, a `trio.CapacityLimiter(3)`, each starting and awaiting a child:
    completes with every child's result, 12 children (never more than 3 open), no
    divergence, however often the worker replaying it is killed."""
    for _ in range(REPEAT):
        async with cluster.client() as client:
            handle = await flows.limited_fan_out.start(client, 12)
            info, kills = await _run_with_kills(cluster, handle)
        await _no_divergence(cluster, info)
        assert info.output == [index * index for index in range(12)]
        assert kills >= 1
        opened = await _children(cluster, handle.run_id)
        assert len(opened) == 12
        assert _max_open(opened) <= 3, "the limiter holds across replays"


MONTHS = ("event", "sleep", "event", "event", "sleep", "sleep")
"""In which months the test sends 'complete' (its sleep is long), and in which the
thirty days run out first (0.3 s)."""


@deadline(240 * REPEAT)
async def test_a_sleep_racing_an_event_every_month_for_six_months(
    cluster: Cluster, children: AikiProcess
) -> None:
    """Each month a task, then thirty days against a 'complete' event: every month ends
    the way it did (the event in the months it was sent, the sleep in the others), the
    task runs once a month, the losing wait of each month is withdrawn (an event sent
    later goes to the month that waits for it), and the run never stalls."""
    for _ in range(REPEAT):
        await _six_months(cluster)


async def _six_months(cluster: Cluster) -> None:
    months = [flows.Month(60.0 if kind == "event" else 0.3) for kind in MONTHS]
    async with cluster.client() as client:
        handle = await flows.monthly_billing.start(client, months)
        sent: set[int] = set()

        async def send_when_waited() -> None:
            """Send month m's event once the run waits for its m-th event."""
            pending = await _q(cluster, "SELECT seq FROM aiki_waits WHERE run_id = %s"
                               " AND kind = 'event' AND state = 'pending'",
                               (handle.run_id,))  # fmt: skip
            for (month,) in pending:
                assert isinstance(month, int)
                if MONTHS[month] == "event" and month not in sent:
                    sent.add(month)
                    await handle.events.complete.send(f"m{month}")

        info, kills = await _run_with_kills(cluster, handle, send_when_waited)
    await _no_divergence(cluster, info)
    assert info.output == [f"event m{m}" if kind == "event" else "slept"
                           for m, kind in enumerate(MONTHS)]  # fmt: skip
    assert kills >= 1
    bills = await _q(cluster, "SELECT key, count(*) FROM e2e_effects WHERE task = 'bill'"
                     " AND key LIKE %s GROUP BY key", (f"{handle.run_id}-%",))  # fmt: skip
    assert sorted(count for _, count in bills) == [1] * len(MONTHS), "billed once a month"
    waits = await _q(cluster, "SELECT kind, seq, state FROM aiki_waits WHERE run_id = %s",
                     (handle.run_id,))  # fmt: skip
    losers = {(kind, seq): state for kind, seq, state in waits}
    for month, kind in enumerate(MONTHS):
        lost = ("sleep", month) if kind == "event" else ("event", month)
        assert losers[lost] == "withdrawn", (month, losers)
    taken = await _q(cluster, "SELECT e.consumed_by, w.state FROM aiki_events e JOIN"
                     " aiki_waits w ON (w.run_id, w.kind, w.key, w.seq) ="
                     " (e.run_id, 'event', e.name, e.consumed_by) WHERE e.run_id = %s",
                     (handle.run_id,))  # fmt: skip
    assert sorted(taken) == [(m, "completed") for m, k in enumerate(MONTHS) if k == "event"]


@deadline(240 * REPEAT)
async def test_a_sliding_window_of_three_children_starts_the_next_when_any_completes(
    cluster: Cluster, children: AikiProcess
) -> None:
    """Three children open at a time; each completion, in whatever order, makes room for
    the next start: the run completes, every start after the third follows the
    completion of a distinct earlier child, never more than three are open."""
    count = 9
    for _ in range(REPEAT):
        async with cluster.client() as client:
            handle = await flows.sliding_window.start(client, count)
            info, kills = await _run_with_kills(cluster, handle)
        await _no_divergence(cluster, info)
        log = info.output
        assert isinstance(log, list)
        pairs = [tuple(int(n) for n in entry.split("->")) for entry in log]
        assert [started for _, started in pairs] == list(range(3, count))
        freed = [done for done, _ in pairs]
        assert len(set(freed)) == len(freed)
        assert all(done < started for done, started in pairs)
        assert kills >= 1
        opened = await _children(cluster, handle.run_id)
        assert len(opened) == count
        assert _max_open(opened) <= 3


@deadline(240 * REPEAT)
async def test_parallel_pipelines_of_a_child_then_a_task(
    cluster: Cluster, children: AikiProcess
) -> None:
    """Per item, in parallel: a child, then a task on its result. Branches reach new
    steps while others still replay theirs: no divergence, every child started once and
    every task ran once."""
    count = 6
    for _ in range(REPEAT):
        async with cluster.client() as client:
            handle = await flows.parallel_pipelines.start(client, count)
            info, kills = await _run_with_kills(cluster, handle)
        await _no_divergence(cluster, info)
        assert info.output == [1] * count, "each item's task ran once"
        assert kills >= 1
        assert len(await _children(cluster, handle.run_id)) == count
