"""Flow control: what the gate costs, and whether it keeps its promises under load.

    python -m benchmarks flow [--n 2000] [--workers 2] [--runs 3] [--backlog 20000]

Against real server and worker processes (PostgreSQL fsync on, Redis), interleaved
rounds, medians:

- **cost**: W1 under a concurrency limit per key (2 at once per key, keys spread over
  1,000) against plain W1, same rounds: throughput and latency;
- **fairness**: tenant A starts ``--backlog`` runs, tenant B starts 200 a second later;
  B's start→completed p99 against B's alone. Then, with weights 1:3, the share of runs
  the gate let through for each tenant while both waited (from the history);
- **priority**: once ``--backlog`` / 2 runs of the default level are started (and wait),
  runs of the highest level, started one at a time: how long each waits after a slot
  frees (its claim less the first run to leave a worker after its start).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
import trio

import aiki

from . import flows
from ._cluster import AikiCluster
from ._report import Measurement, machine, progress, table, write_json


def _query(database_url: str, sql: str, params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


async def _done(database_url: str, tag: str) -> int:
    rows = await trio.to_thread.run_sync(
        _query, database_url,
        "SELECT count(*) FROM aiki_runs WHERE reference_id LIKE %s AND status = 'completed'",
        (f"{tag}-%",),
    )  # fmt: skip
    return int(str(rows[0][0]))


async def _start_all(
    client: aiki.Client, versions: list[aiki.WorkflowVersion[object, int]], inputs: list[object],
    inflight: int,
) -> None:  # fmt: skip
    limit = trio.Semaphore(inflight)

    async def start(version: aiki.WorkflowVersion[object, int], value: object) -> None:
        async with limit:
            await version.start(client, value)

    async with trio.open_nursery() as nursery:
        for version, value in zip(versions, inputs, strict=True):
            nursery.start_soon(start, version, value)


async def _wait_done(database_url: str, tag: str, n: int, label: str) -> None:
    done = 0
    while done < n:
        await trio.sleep(0.2)
        done = await _done(database_url, tag)
        progress(done, n, label)
    print(file=sys.stderr)


def _latencies(database_url: str, tag: str) -> list[float]:
    rows = _query(database_url, "SELECT extract(epoch FROM updated_at - created_at) FROM aiki_runs"
                  " WHERE reference_id LIKE %s", (f"{tag}-%",))  # fmt: skip
    return sorted(float(str(row[0])) * 1000 for row in rows)


def _p(ms: list[float], q: float) -> float:
    return ms[max(0, int(len(ms) * q) - 1)]


async def _w1(
    client: aiki.Client, database_url: str, n: int, limited: bool, label: str
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    if limited:
        versions = [flows.one_task_limited.with_(reference_id=f"{tag}-{x}") for x in range(n)]
        inputs: list[object] = [flows.Keyed(key=x % 1000, x=x) for x in range(n)]
    else:
        versions = [flows.one_task.with_(reference_id=f"{tag}-{x}") for x in range(n)]  # type: ignore[misc]
        inputs = list(range(n))
    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_start_all, client, versions, inputs, 64)
        await _wait_done(database_url, tag, n, label)
    elapsed = time.perf_counter() - began
    ms = await trio.to_thread.run_sync(_latencies, database_url, tag)
    return {"tput": n / elapsed, "p50": _p(ms, 0.5), "p99": _p(ms, 0.99)}


async def _tenants(
    client: aiki.Client, database_url: str, backlog: int, weight_b: int, alone: bool, label: str
) -> dict[str, float]:
    """A's ``backlog`` runs, then B's 200 a second later (or B's alone): B's p99, and the
    share of admissions while both waited."""
    tag = uuid.uuid4().hex[:8]
    a = flows.one_task.with_(fairness_key=f"a-{tag}")
    b = flows.one_task.with_(fairness_key=f"b-{tag}", fairness_weight=weight_b)
    total = 200 if alone else backlog + 200
    async with trio.open_nursery() as nursery:
        if not alone:
            nursery.start_soon(_start_all, client,
                               [a.with_(reference_id=f"{tag}-a{x}") for x in range(backlog)],
                               list(range(backlog)), 64)  # fmt: skip
            await trio.sleep(1.0)
        nursery.start_soon(_start_all, client,
                           [b.with_(reference_id=f"{tag}-b{x}") for x in range(200)],
                           list(range(200)), 64)  # fmt: skip
        await _wait_done(database_url, tag, total, label)
    ms = await trio.to_thread.run_sync(
        lambda: sorted(float(str(row[0])) * 1000 for row in _query(
            database_url,
            "SELECT extract(epoch FROM updated_at - created_at) FROM aiki_runs"
            " WHERE reference_id LIKE %s", (f"{tag}-b%",))))  # fmt: skip
    share = 0.0
    if not alone:
        rows = await trio.to_thread.run_sync(
            _query, database_url,
            "SELECT r.fairness_key FROM aiki_transitions t JOIN aiki_runs r ON r.id = t.run_id"
            " WHERE r.reference_id LIKE %s AND t.reason = 'admitted by the gate' ORDER BY t.id",
            (f"{tag}-%",),
        )  # fmt: skip
        keys = [str(row[0])[0] for row in rows]
        # While both waited: up to the last admission of B (A's backlog outlasts B's).
        last_b = max((i for i, key in enumerate(keys) if key == "b"), default=-1)
        first_b = min((i for i, key in enumerate(keys) if key == "b"), default=0)
        window = keys[first_b : last_b + 1]
        share = window.count("b") / max(1, len(window))
    return {"p99": _p(ms, 0.99), "share_b": share}


async def _priority(
    client: aiki.Client, database_url: str, backlog: int, samples: int
) -> list[float]:
    """Milliseconds each highest-priority run waited after a slot freed."""
    tag = uuid.uuid4().hex[:8]
    behind = [flows.one_task.with_(reference_id=f"{tag}-{x}") for x in range(backlog)]
    await _start_all(client, behind, list(range(backlog)), 64)  # all started: they wait
    urgent = flows.one_task.with_(priority=4)
    for x in range(samples):
        handle = await urgent.with_(reference_id=f"{tag}-u{x}").start(client, x)
        await handle.wait_for_status("completed")
        progress(x + 1, samples, "priority")
    print(file=sys.stderr)
    rows = await trio.to_thread.run_sync(
        _query, database_url,
        """
        SELECT extract(epoch FROM (
            SELECT min(t.at) FROM aiki_transitions t
            WHERE t.run_id = u.id AND t.to_status = 'running')
          - greatest(u.created_at, (
            SELECT min(f.at) FROM aiki_transitions f JOIN aiki_runs o ON o.id = f.run_id
            WHERE f.from_status = 'running' AND f.at >= u.created_at
              AND o.reference_id LIKE %s)))
        FROM aiki_runs u WHERE u.reference_id LIKE %s
        """,
        (f"{tag}-%", f"{tag}-u%"),
    )  # fmt: skip
    waits = sorted(max(0.0, float(str(row[0])) * 1000) for row in rows if row[0] is not None)
    await _wait_done(database_url, tag, backlog + samples, "priority backlog")
    return waits


def main(argv: list[str]) -> None:
    """Run the flow-control benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks flow")
    parser.add_argument("--n", type=int, default=2000, help="runs per W1 measurement")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians over these)")
    parser.add_argument("--backlog", type=int, default=20_000, help="tenant A's runs")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/flow.json"))
    args = parser.parse_args(argv)
    cluster = AikiCluster.start("benchmarks.flows:flow_worker", args.workers)
    try:
        results = trio.run(_bench, cluster, args)
    finally:
        cluster.stop()
    print(f"\nMachine: {machine()}; one server + {args.workers} workers (32 slots each) + "
          f"PostgreSQL (fsync on) + Redis on this machine\n")  # fmt: skip
    print(table(results, {
        "W1 limited / W1 (throughput)": ("W1 with a limit per key: workflows/s", "W1: workflows/s"),
        "B with A's backlog / B alone (p99)": ("B behind A's backlog: p99", "B alone: p99"),
    }))  # fmt: skip
    write_json(args.json, results)
    print(f"\nsamples: {args.json}")


async def _bench(cluster: AikiCluster, args: argparse.Namespace) -> list[Measurement]:
    m = {key: Measurement(group, name, unit) for key, group, name, unit in [
        ("w1", "cost", "W1: workflows/s", "wf/s"),
        ("w1_limited", "cost", "W1 with a limit per key: workflows/s", "wf/s"),
        ("w1_p99", "cost", "W1: p99", "ms"),
        ("w1_limited_p99", "cost", "W1 with a limit per key: p99", "ms"),
        ("alone", "fairness", "B alone: p99", "ms"),
        ("behind", "fairness", "B behind A's backlog: p99", "ms"),
        ("share", "fairness", "B's share of admissions, weights 1:3 (target 0.75)", "share"),
        ("urgent_p50", "priority", "highest level: wait after a slot frees, p50", "ms"),
        ("urgent_p99", "priority", "highest level: wait after a slot frees, p99", "ms"),
    ]}  # fmt: skip
    url, database_url = cluster.url, cluster.services.database_url
    async with aiki.Client(url) as client:
        await _w1(client, database_url, 200, False, "warm-up")
        for round_ in range(args.runs):
            r = f"r{round_ + 1}"
            for limited, key in ((False, "w1"), (True, "w1_limited")):
                found = await _w1(client, database_url, args.n, limited, f"{key} {r}")
                m[key].samples.append(found["tput"])
                m[f"{key}_p99"].samples.append(found["p99"])
            m["alone"].samples.append(
                (await _tenants(client, database_url, args.backlog, 1, True, f"B alone {r}"))["p99"]
            )
            m["behind"].samples.append((await _tenants(
                client, database_url, args.backlog, 1, False, f"A+B {r}"))["p99"])  # fmt: skip
            shares = await _tenants(
                client, database_url, args.backlog // 4, 3, False, f"A+B 1:3 {r}"
            )
            m["share"].samples.append(shares["share_b"])
            waits = await _priority(client, database_url, args.backlog // 2, 30)
            m["urgent_p50"].samples.append(statistics.median(waits))
            m["urgent_p99"].samples.append(waits[-1])
    return list(m.values())
