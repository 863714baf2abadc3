"""Schedules: how late occurrences fire, and what firing costs, as schedules multiply.

``N`` schedules all fire every second on the same second (six-field cron ``* * * * * *``:
the worst case, every occurrence of every schedule due at once) and start a one-task
workflow each. Per N, for ``--seconds``: the firing lag (run created - occurrence time, on
PostgreSQL's clock) p50/p99, the share of occurrences that fired (none missed or doubled),
start → completed latency, and CPU per occurrence by role. Ratios are against the smallest
N measured in the same run.

    python -m benchmarks schedules [--counts 10,100,500] [--seconds 10] [--rounds 3]
                                   [--workers 2]

With ``--workers 0`` nothing executes the runs (they stay queued): the figures are then
the scheduler's own (firing, plus publishing to Redis), without the load of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg
import trio

import aiki

from . import flows
from ._cluster import AikiCluster
from ._meters import Meters, per_workflow
from ._report import machine, progress


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def _activate(url: str, count: int, tag: str) -> list[str]:
    every_second = aiki.schedule(cron="* * * * * *")
    ids = []
    async with aiki.Client(url) as client:
        for index in range(count):
            handle = await every_second.activate(client, flows.one_task, index,
                                                 reference_id=f"{tag}-{index}")  # fmt: skip
            ids.append(handle.id)
            progress(index + 1, count, f"activating {count}")
    return ids


async def _deactivate(url: str, ids: list[str]) -> None:
    async with aiki.Client(url) as client:
        for schedule_id in ids:
            await client.deactivate_schedule(schedule_id)


def _window(database_url: str, ids: list[str], start: float, end: float) -> list[tuple[float, ...]]:
    """(lag ms, start→completed ms or -1) of runs whose occurrence falls in [start, end)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT extract(epoch FROM r.created_at - r.occurrence) * 1000,
                   CASE WHEN r.status = 'completed'
                        THEN extract(epoch FROM r.updated_at - r.created_at) * 1000 ELSE -1 END
            FROM aiki_runs r
            WHERE r.schedule_id = ANY(%s::uuid[])
              AND r.occurrence >= to_timestamp(%s) AND r.occurrence < to_timestamp(%s)
            """,
            (ids, start, end),
        ).fetchall()
    return [(float(lag), float(done)) for lag, done in rows]


def _drain(database_url: str, ids: list[str], seconds: float = 300.0) -> None:
    """Wait until the runs the schedules started have ended (the next measurement starts
    on an idle cluster)."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM aiki_runs WHERE schedule_id = ANY(%s::uuid[])"
                " AND status NOT IN ('completed', 'failed', 'cancelled')",
                (ids,),
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.5)
    raise TimeoutError(f"runs still active after {seconds:g} s")


def _measure(
    cluster: AikiCluster, count: int, seconds: float, *, drain: bool = True
) -> dict[str, float]:
    """Activate ``count`` schedules, let them fire for ``seconds``, read lag and cost."""
    tag = uuid.uuid4().hex[:8]
    ids = trio.run(_activate, cluster.url, count, tag)
    meters = Meters(cluster.services.database_url, cluster.services.redis_url, cluster.roles)
    # Measured from a whole second at least 2 s on: every schedule is firing by then.
    start = float(int(time.time()) + 3)
    meters.settle()
    before = meters.read()
    time.sleep(max(0.0, start - time.time()) + seconds)
    end = start + int(seconds)
    trio.run(_deactivate, cluster.url, ids)
    meters.settle()
    after = meters.read()
    rows = _window(cluster.services.database_url, ids, start, end)
    if drain:
        _drain(cluster.services.database_url, ids)
    expected = count * int(seconds)
    lags = [lag for lag, _ in rows]
    done = [ms for _, ms in rows if ms >= 0]
    cost = per_workflow(before, after, max(1, expected))
    return {
        "fired_share": len(rows) / expected,
        "lag_p50": _percentile(lags, 0.5),
        "lag_p99": _percentile(lags, 0.99),
        "completed_p50": _percentile(done, 0.5),
        "cpu_server": cost["cpu_ms_server"],
        "cpu_postgres": cost.get("cpu_ms_postgres", float("nan")),
        "cpu_workers": cost["cpu_ms_workers"],
    }


def main(argv: list[str]) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks schedules")
    parser.add_argument("--counts", default="10,100,500", help="numbers of schedules")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="0: runs are only queued")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.counts.split(",")]
    # One worker at least registers the workflow version (schedules of unknown versions are
    # refused); with --workers 0 it is stopped again before measuring.
    cluster = AikiCluster.start("benchmarks.flows:worker", max(1, args.workers))
    cluster.scale(args.workers)
    results: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    try:
        for _ in range(args.rounds):  # interleaved: each round measures every N once
            for count in counts:
                results[count].append(
                    _measure(cluster, count, args.seconds, drain=args.workers > 0)
                )
    finally:
        cluster.stop()
    keys = ("fired_share", "lag_p50", "lag_p99", "completed_p50", "cpu_server", "cpu_postgres",
            "cpu_workers")  # fmt: skip
    medians = {count: {key: statistics.median(r[key] for r in results[count]) for key in keys}
               for count in counts}  # fmt: skip
    base = medians[counts[0]]
    print(f"\n{machine()}; {args.workers} worker processes; {args.rounds} rounds of "
          f"{args.seconds:g} s, medians")  # fmt: skip
    print(
        "\n| schedules (all due each second) | fired | lag p50 ms | lag p99 ms | lag p99 vs base "
        "| start→completed p50 ms | server CPU ms/occ | PG CPU ms/occ | workers CPU ms/occ |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in counts:
        m = medians[count]
        print(
            f"| {count} | {m['fired_share']:.1%} | {m['lag_p50']:.1f} | {m['lag_p99']:.1f} "
            f"| {m['lag_p99'] / base['lag_p99']:.2f} | {m['completed_p50']:.1f} "
            f"| {m['cpu_server']:.2f} | {m['cpu_postgres']:.2f} | {m['cpu_workers']:.2f} |"
        )
