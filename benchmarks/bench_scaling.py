"""How the cost of a workflow grows with servers, workers and backlog.

    python -m benchmarks scaling [--n 2000] [--rounds 2] [--servers 1,2,3] [--workers 1,2,4]
                                 [--backlogs 10000,100000]

1. **Servers and workers.** For each number of server processes (``aiki server
   --processes``) and each number of worker processes, W1 at ``--n`` runs: throughput,
   CPU ms per workflow by role, PostgreSQL transactions and Redis commands per workflow.
   Rounds alternate over the whole grid, so a drift of the machine's speed hits every
   cell alike; medians are reported.
   With ``--redis-cluster``, Redis is a local 3-master Redis Cluster (queues in
   ``--stream-shards`` sub-streams) instead of one Redis.
2. **Backlog.** One server process and two workers: W1, then W1 next to a backlog of
   queued runs (of a version nobody serves: in PostgreSQL and in its Redis stream) and
   as many sleeping runs (asleep for an hour, holding no slot), for each size in
   ``--backlogs`` (cumulative: the next size adds to the last).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import typing
import uuid
from pathlib import Path

import psycopg
import trio

import aiki
from transport.local_cluster import LocalRedisCluster

from . import flows
from ._cluster import AikiCluster
from ._meters import per_workflow
from ._report import Measurement, machine, progress, table, write_json
from .bench_workflows import _load

INFLIGHT = 64
_REDIS_NODES: dict[str, list[int]] = {}
"""The Redis Cluster's node pids (``redis``), when the benchmark started one."""


def _count(database_url: str, sql: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


async def _w1(cluster: AikiCluster, n: int, label: str) -> dict[str, float]:
    """W1 at ``n`` runs: throughput and cost per workflow."""
    meters = cluster.meters(**_REDIS_NODES)
    await trio.to_thread.run_sync(meters.settle)
    before = await trio.to_thread.run_sync(meters.read)
    async with aiki.Client(cluster.url) as client:
        found = await _load(client, flows.one_task, n, INFLIGHT, cluster.services.database_url,
                            label)  # fmt: skip
    await trio.to_thread.run_sync(meters.settle)
    after = await trio.to_thread.run_sync(meters.read)
    return found | per_workflow(before, after, n)


def _grid(args: argparse.Namespace) -> list[Measurement]:
    cells: dict[tuple[int, int], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for servers in args.servers:
            cluster = AikiCluster.start("benchmarks.flows:worker", max(args.workers),
                                        server_processes=servers)  # fmt: skip
            try:
                for workers in args.workers:
                    cluster.scale(workers)
                    label = f"round {round_ + 1}: {servers} server, {workers} workers"
                    cells.setdefault((servers, workers), []).append(
                        trio.run(_w1, cluster, args.n, label)
                    )
            finally:
                cluster.stop()
    found = []
    for (servers, workers), samples in cells.items():
        group = f"{servers} server process{'es' if servers > 1 else ''}, {workers} workers"
        found += _measurements(group, samples, ["throughput", "cpu_ms_server", "cpu_ms_workers",
                                                "cpu_ms_postgres", "cpu_ms_redis", "cpu_ms_client",
                                                "pg_transactions", "redis_commands"])  # fmt: skip
    return found


_MEASURES = {
    "throughput": ("W1 throughput", "wf/s"),
    "p50": ("W1 latency p50 (start to completed)", "ms"),
    "cpu_ms_server": ("server CPU per workflow", "ms"),
    "cpu_ms_workers": ("workers' CPU per workflow", "ms"),
    "cpu_ms_postgres": ("PostgreSQL CPU per workflow", "ms"),
    "cpu_ms_redis": ("Redis CPU per workflow", "ms"),
    "cpu_ms_client": ("client CPU per workflow", "ms"),
    "pg_transactions": ("PostgreSQL transactions per workflow", "count"),
    "redis_commands": ("Redis commands per workflow", "count"),
}


def _measurements(
    group: str, samples: list[dict[str, float]], keys: list[str]
) -> list[Measurement]:
    """One `Measurement` per key of ``keys``, over the samples of one group."""
    return [Measurement(group, *_MEASURES[key], [sample[key] for sample in samples])
            for key in keys]  # fmt: skip


async def _start_many(
    client: aiki.Client, version: aiki.WorkflowVersion[typing.Any, typing.Any], count: int,
    make_input: typing.Callable[[int], object], tag: str,
) -> None:  # fmt: skip
    limit = trio.Semaphore(INFLIGHT)

    async def start(index: int) -> None:
        async with limit:
            await version.with_(reference_id=f"{tag}-{index}").start(client, make_input(index))

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(start, index)
            if index % 1000 == 0:
                progress(index, count, f"{version.workflow} started")
    print(file=sys.stderr)


async def _backlog(cluster: AikiCluster, args: argparse.Namespace) -> list[Measurement]:
    database_url = cluster.services.database_url
    found: list[Measurement] = []

    async def measure(label: str) -> None:
        samples = [await _w1(cluster, args.n, f"{label}, round {r + 1}")
                   for r in range(args.rounds)]  # fmt: skip
        keys = ["throughput", "p50", "cpu_ms_server", "cpu_ms_postgres", "pg_transactions"]
        found.extend(_measurements(label, samples, keys))

    await measure("no backlog")
    total = 0
    async with aiki.Client(cluster.url) as client:
        for size in args.backlogs:
            tag, adding = uuid.uuid4().hex[:8], size - total
            began = time.perf_counter()
            await _start_many(client, flows.queued, adding, lambda i: i, f"q{tag}")
            await _start_many(client, flows.sleeper, adding, lambda i: 3600.0, f"s{tag}")
            while (asleep := await trio.to_thread.run_sync(
                _count, database_url, "SELECT count(*) FROM aiki_runs WHERE status = 'sleeping'",
            )) < size:  # fmt: skip
                progress(asleep, size, "asleep")
                await trio.sleep(1)
            print(f"\n  backlog {size:,}: built in {time.perf_counter() - began:.0f} s",
                  file=sys.stderr)  # fmt: skip
            total = size
            queued = await trio.to_thread.run_sync(
                _count, database_url, "SELECT count(*) FROM aiki_runs WHERE status = 'queued'"
            )
            print(f"  queued {queued:,}, asleep {asleep:,}", file=sys.stderr)
            await measure(f"next to {size:,} queued + {size:,} sleeping runs")
    return found


def main(argv: list[str]) -> None:
    """Run the scaling benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling")
    ints = lambda text: [int(item) for item in text.split(",") if item]  # noqa: E731
    parser.add_argument("--n", type=int, default=2000, help="W1 runs per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (medians over these)")
    parser.add_argument("--servers", type=ints, default=[1, 2, 3])
    parser.add_argument("--workers", type=ints, default=[1, 2, 4])
    parser.add_argument("--backlogs", type=ints, default=[10_000, 100_000])
    parser.add_argument("--redis-cluster", action="store_true",
                        help="a local 3-master Redis Cluster instead of one Redis")  # fmt: skip
    parser.add_argument("--stream-shards", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/scaling.json"))
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.redis_cluster:
            base = Path(tempfile.mkdtemp(prefix="aiki-bench-cluster-"))
            cluster = stack.enter_context(LocalRedisCluster(base))
            stack.callback(cluster.remove)
            os.environ["AIKI_REDIS_URL"] = cluster.url
            _REDIS_NODES["redis"] = [node.pid for node in cluster.nodes if node.pid]
        if args.stream_shards > 1:
            os.environ["AIKI_STREAM_SHARDS"] = str(args.stream_shards)
        _run(args)


def _run(args: argparse.Namespace) -> None:
    results = _grid(args) if args.servers and args.workers else []
    if args.backlogs:
        cluster = AikiCluster.start("benchmarks.flows:sleeper_worker", 2)
        try:
            cluster.scale(0)  # register the backlog's version once; then nobody serves it
            cluster.target = "benchmarks.flows:backlog_worker"
            cluster.scale(1)
            cluster.scale(0)
            cluster.target = "benchmarks.flows:sleeper_worker"
            cluster.scale(2)
            results += trio.run(_backlog, cluster, args)
        finally:
            cluster.stop()
    print(f"\nMachine: {machine()}; every process on this machine; PostgreSQL fsync on; "
          f"{args.n} W1 runs per measurement, medians of {args.rounds} rounds\n")  # fmt: skip
    print(table(results, {}))
    write_json(args.json, results)
    print(f"\nsamples: {args.json}")
