"""The benchmark suite: Aiki's workloads, scaling and unloaded latency, beside DBOS and
Celery measured in the same run on the same machine.

    python -m benchmarks suite [--n 2000] [--rounds 3] [--no-peers] [--out benchmarks/results]

Workloads: W1 (one task), W5 (five sequential tasks), fan-out (a parent with 50 child
workflows of one task each), event round trip (runs waiting for an event; send it, the run
resumes and completes). Each load starts ``--n`` workflows as fast as the client can (64
starts in flight) and waits until all completed. Rounds interleave the systems and
workloads, so machine drift hits all alike; the table quotes medians and min-max.

Per measurement: workflows/s, tasks/s, latency p50/p95/p99 (start → completed, server
clock), CPU milliseconds per workflow of each process role (client, server, workers,
PostgreSQL, Redis; a peer's own processes), PostgreSQL transactions and Redis commands per
workflow. Scaling: W1 with 1, 2 and 4 worker processes (Celery: 1, 2 and 4 worker
processes). Unloaded: one workflow at a time, start → result as the client sees it.

Writes ``suite.json`` (every sample), ``suite.md`` (the table), and, with matplotlib
installed, ``scaling.png`` and ``latency.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
import trio

import aiki
from tests._processes import ROOT

from . import flows
from ._cluster import AikiCluster
from ._meters import Meters, Reading, per_workflow
from ._report import machine, progress
from ._targets import table as targets_table
from ._targets import verdicts

INFLIGHT = 64
FAN_OUT_WIDTH = 50
WORKER_COUNTS = (1, 2, 4)
DEFAULT_WORKERS = 2
STOP_SECONDS = 60.0
"""How long stopping a peer may take at the end (shielded: it runs when cancelled too)."""


@attrs.define
class Sample:
    """One measurement: a system running a workload once."""

    system: str
    workload: str
    workers: int
    workflows: int
    tasks: int
    seconds: float
    latencies_ms: list[float]
    cost: dict[str, float] = attrs.Factory(dict)

    @property
    def throughput(self) -> float:
        return self.workflows / self.seconds if self.seconds else 0.0


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- Aiki ---------------------------------------------------------------------------------


def _query(database_url: str, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


async def _count(database_url: str, tag: str, status: str) -> int:
    rows = await trio.to_thread.run_sync(
        _query,
        database_url,
        "SELECT count(*) FROM aiki_runs WHERE reference_id LIKE %s AND status = %s",
        (f"{tag}-%", status),
    )
    return int(str(rows[0][0]))


async def _until(database_url: str, tag: str, status: str, total: int, label: str) -> None:
    done = 0
    while done < total:
        await trio.sleep(0.1)  # polling the database for progress, not settling
        done = await _count(database_url, tag, status)
        progress(done, total, label)
    print(file=sys.stderr)


async def _start_all(
    client: aiki.Client,
    version: aiki.WorkflowVersion[int, typing.Any],
    count: int,
    tag: str,
) -> list[aiki.RunHandle[typing.Any]]:
    limit = trio.Semaphore(INFLIGHT)
    handles: list[aiki.RunHandle[typing.Any]] = []

    async def start(x: int) -> None:
        async with limit:
            handles.append(await version.with_(reference_id=f"{tag}-{x}").start(client, x))

    async with trio.open_nursery() as nursery:
        for x in range(count):
            nursery.start_soon(start, x)
    return handles


async def _metered(meters: Meters, load: Callable[[], Awaitable[None]]) -> tuple[Reading, Reading]:
    await trio.to_thread.run_sync(meters.settle)
    before = await trio.to_thread.run_sync(meters.read)
    await load()
    await trio.to_thread.run_sync(meters.settle)
    return before, await trio.to_thread.run_sync(meters.read)


async def aiki_load(
    cluster: AikiCluster, client: aiki.Client, workload: str, n: int, label: str
) -> Sample:
    """Run one Aiki workload of about ``n`` workflows; return its sample."""
    db = cluster.services.database_url
    tag = uuid.uuid4().hex[:10]
    began = ended = 0.0
    version: aiki.WorkflowVersion[int, typing.Any]
    if workload == "fan-out":
        parents = max(2, n // FAN_OUT_WIDTH)
        workflows, tasks = parents * (FAN_OUT_WIDTH + 1), parents * FAN_OUT_WIDTH
    else:
        parents = n
        workflows = n
        tasks = {"W1": 1, "W1 trio task": 1, "W5": 5, "event": 0}[workload] * n
    version = {
        "W1": flows.one_task,
        "W1 trio task": flows.one_trio_task,
        "W5": flows.five_tasks,
        "fan-out": flows.fan_out,
        "event": flows.event_round_trip,
    }[workload]  # type: ignore[assignment]
    handles: list[aiki.RunHandle[typing.Any]] = []
    if workload == "event":
        handles = await _start_all(client, version, n, tag)
        await _until(db, tag, "awaiting_event", n, f"{label} (waiting)")

    async def load() -> None:
        nonlocal began, ended, handles
        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if workload == "event":
                limit = trio.Semaphore(INFLIGHT)

                async def send(handle: aiki.RunHandle[typing.Any]) -> None:
                    async with limit:
                        await handle.events.go.send(flows.Go(sent_at=time.time()))  # type: ignore[attr-defined]

                for handle in handles:
                    nursery.start_soon(send, handle)
            elif workload == "fan-out":
                limit = trio.Semaphore(INFLIGHT)

                async def start_parent(x: int) -> None:
                    async with limit:
                        await flows.fan_out.with_(reference_id=f"{tag}-{x}").start(
                            client, FAN_OUT_WIDTH
                        )

                for x in range(parents):
                    nursery.start_soon(start_parent, x)
            else:
                nursery.start_soon(_start_all, client, version, n, tag)
            await _until(db, tag, "completed", parents, label)
        ended = time.perf_counter()

    before, after = await _metered(cluster.meters(), load)
    if workload == "event":
        sql = (
            "SELECT (extract(epoch FROM updated_at) - (output #>> '{}')::float8) * 1000"
            " FROM aiki_runs WHERE reference_id LIKE %s"
        )
    else:
        sql = (
            "SELECT extract(epoch FROM updated_at - created_at) * 1000 FROM aiki_runs"
            " WHERE reference_id LIKE %s"
        )
    rows = await trio.to_thread.run_sync(_query, db, sql, (f"{tag}-%",))
    return Sample(
        "aiki",
        workload,
        len(cluster.workers),
        workflows,
        tasks,
        ended - began,
        sorted(float(row[0]) for row in rows),  # type: ignore[arg-type]
        per_workflow(before, after, workflows),
    )


async def aiki_unloaded(client: aiki.Client, workload: str, count: int) -> list[float]:
    """Start → result, one workflow at a time, as the client sees it."""
    version = {
        "W1": flows.one_task,
        "W1 trio task": flows.one_trio_task,
        "W5": flows.five_tasks,
    }[workload]
    samples = []
    for x in range(count):
        began = time.perf_counter()
        handle = await version.start(client, x)
        await handle.wait_for_status("completed")
        samples.append((time.perf_counter() - began) * 1000)
    return sorted(samples)


# -- peers --------------------------------------------------------------------------------


@attrs.define
class Peer:
    """A peer's driver process (see `benchmarks.peers._protocol`) and its helpers."""

    name: str
    driver: subprocess.Popen[str]
    helpers: list[subprocess.Popen[str]] = attrs.Factory(list)

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        helpers: list[subprocess.Popen[str]] | None = None,
    ) -> Peer:
        driver = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert driver.stdout is not None
        if driver.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{name} did not start")
        return cls(name, driver, helpers or [])

    def pids(self) -> list[int]:
        return [self.driver.pid, *(helper.pid for helper in self.helpers)]

    def run(self, workload: str, count: int) -> dict[str, typing.Any]:
        assert self.driver.stdin is not None
        assert self.driver.stdout is not None
        self.driver.stdin.write(f"{workload} {count}\n")
        self.driver.stdin.flush()
        line = self.driver.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited during {workload}")
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for process in [self.driver, *self.helpers]:
            if process.stdin:
                process.stdin.close()
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def peer_load(peer: Peer, meters: Meters, workload: str, n: int, workers: int) -> Sample:
    """Run a peer's load between two meter readings."""
    print(f"  {peer.name} {workload} x{n} ...", file=sys.stderr, flush=True)
    meters.settle()
    before = meters.read()
    result = peer.run(workload.lower(), n)
    meters.settle()
    after = meters.read()
    tasks = {"W1": 1, "W5": 5}[workload] * n
    return Sample(
        peer.name,
        workload,
        workers,
        n,
        tasks,
        float(result["seconds"]),
        list(result["latencies_ms"]),
        per_workflow(before, after, n),
    )


def _database(url: str, name: str) -> str:
    """A database of its own on the same PostgreSQL server (created if missing)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def start_dbos(cluster: AikiCluster) -> Peer:
    """DBOS in one process on a database of its own on the suite's PostgreSQL."""
    url = _database(cluster.services.database_url, "dbos_bench")
    return Peer.start("dbos", ["benchmarks.peers.dbos_peer", url], _plain_env())


def start_celery(cluster: AikiCluster, processes: int) -> Peer:
    """``processes`` Celery worker processes and a client, on the suite's Redis (db 1)."""
    env = _plain_env() | {"AIKI_BENCH_CELERY_REDIS": _redis_db(cluster.services.redis_url, 1)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.peers.celery_app",
            "worker",
            "--concurrency",
            str(processes),
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=open(cluster.base / "celery.log", "a"),  # noqa: SIM115
    )
    return Peer.start("celery", ["benchmarks.peers.celery_peer"], env, [worker])


def _plain_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}


def peers_available() -> list[str]:
    """The peers whose packages are installed."""
    return [
        name
        for name, module in (("dbos", "dbos"), ("celery", "celery"))
        if importlib.util.find_spec(module) is not None
    ]


# -- the run ------------------------------------------------------------------------------


async def _run(cluster: AikiCluster, args: argparse.Namespace, peers: list[str]) -> list[Sample]:
    samples: list[Sample] = []
    unloaded: list[Sample] = []
    dbos = await trio.to_thread.run_sync(start_dbos, cluster) if "dbos" in peers else None
    try:
        async with aiki.Client(cluster.url) as client:
            await aiki_unloaded(client, "W1", 20)  # warm up connections and caches
            for round_ in range(1, args.rounds + 1):
                cluster.scale(DEFAULT_WORKERS)
                for workload in ("W1", "W1 trio task", "W5", "fan-out", "event"):
                    samples.append(
                        await aiki_load(
                            cluster, client, workload, args.n, f"aiki {workload} r{round_}"
                        )
                    )
                if dbos is not None:
                    meters = cluster.meters(peer=dbos.pids())
                    for workload in ("W1", "W5"):
                        samples.append(
                            await trio.to_thread.run_sync(
                                peer_load, dbos, meters, workload, args.n, 1
                            )
                        )
                for workers in WORKER_COUNTS:
                    cluster.scale(workers)
                    sample = await aiki_load(
                        cluster, client, "W1", args.n, f"aiki W1 {workers} workers r{round_}"
                    )
                    sample.workload = "W1 scaling"
                    samples.append(sample)
                    if "celery" in peers:
                        celery = await trio.to_thread.run_sync(start_celery, cluster, workers)
                        try:
                            sample = await trio.to_thread.run_sync(
                                peer_load,
                                celery,
                                cluster.meters(peer=celery.pids()),
                                "W1",
                                args.n,
                                workers,
                            )
                        finally:
                            with trio.move_on_after(STOP_SECONDS, shield=True):
                                await trio.to_thread.run_sync(celery.stop)
                        if workers == DEFAULT_WORKERS:
                            samples.append(sample)
                        samples.append(attrs.evolve(sample, workload="W1 scaling"))
            cluster.scale(DEFAULT_WORKERS)
            for workload, count in (
                ("W1", args.unloaded),
                ("W1 trio task", args.unloaded),
                ("W5", args.unloaded // 2),
            ):
                latencies = await aiki_unloaded(client, workload, count)
                unloaded.append(
                    Sample(
                        "aiki", f"{workload} unloaded", DEFAULT_WORKERS, count, 0, 0.0, latencies
                    )
                )
        if dbos is not None:
            for workload, count in (("W1", args.unloaded), ("W5", args.unloaded // 2)):
                result = await trio.to_thread.run_sync(
                    dbos.run, f"unloaded-{workload.lower()}", count
                )
                unloaded.append(
                    Sample(
                        "dbos",
                        f"{workload} unloaded",
                        1,
                        count,
                        0,
                        0.0,
                        list(result["latencies_ms"]),
                    )
                )
        if "celery" in peers:
            celery = await trio.to_thread.run_sync(start_celery, cluster, DEFAULT_WORKERS)
            try:
                result = await trio.to_thread.run_sync(celery.run, "unloaded-w1", args.unloaded)
            finally:
                with trio.move_on_after(STOP_SECONDS, shield=True):
                    await trio.to_thread.run_sync(celery.stop)
            unloaded.append(
                Sample(
                    "celery",
                    "W1 unloaded",
                    DEFAULT_WORKERS,
                    args.unloaded,
                    0,
                    0.0,
                    list(result["latencies_ms"]),
                )
            )
    finally:
        if dbos is not None:
            with trio.move_on_after(STOP_SECONDS, shield=True):
                await trio.to_thread.run_sync(dbos.stop)
    return samples + unloaded


# -- the report ---------------------------------------------------------------------------

ROLES = ("client", "server", "workers", "peer", "postgres", "redis")


@attrs.frozen
class Row:
    """Medians over rounds of one (system, workload, workers)."""

    system: str
    workload: str
    workers: int
    rounds: int
    throughput: float
    throughput_range: tuple[float, float]
    tasks_per_second: float
    p50: float
    p95: float
    p99: float
    cost: dict[str, float]


def summarize(samples: list[Sample]) -> list[Row]:
    """One row per (system, workload, workers), medians over the rounds."""
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.system, sample.workload, sample.workers), []).append(sample)
    rows = []
    for (system, workload, workers), group in groups.items():
        rates = [sample.throughput for sample in group]
        costs = {
            key: statistics.median(sample.cost.get(key, 0.0) for sample in group)
            for key in group[0].cost
        }
        rows.append(
            Row(
                system,
                workload,
                workers,
                len(group),
                statistics.median(rates),
                (min(rates), max(rates)),
                statistics.median(s.tasks / s.seconds if s.seconds else 0.0 for s in group),
                *(
                    statistics.median(percentile(s.latencies_ms, q) for s in group)
                    for q in (0.50, 0.95, 0.99)
                ),
                costs,
            )
        )
    return rows


def _find(rows: list[Row], system: str, workload: str, workers: int | None = None) -> Row | None:
    for row in rows:
        if (row.system, row.workload) == (system, workload) and workers in (None, row.workers):
            return row
    return None


def markdown(rows: list[Row], args: argparse.Namespace) -> str:
    """The tables for benchmarks/README.md."""
    lines = [
        f"Machine: {machine()}; everything (client, server, workers, peers, PostgreSQL with "
        f"fsync on, Redis) on this machine; {args.n} workflows per load, {args.rounds} "
        "interleaved rounds, medians (min-max of throughput).",
        "",
        "| system | workload | workers | workflows/s | tasks/s | p50 ms | p95 ms | p99 ms | "
        "CPU ms/wf client · server · workers · peer · PG · Redis | PG txn/wf | Redis cmd/wf |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in sorted(
        rows, key=lambda r: (r.workload.endswith("unloaded"), r.workload, r.system, r.workers)
    ):
        cpu = " · ".join(
            f"{row.cost[f'cpu_ms_{role}']:.2f}" if f"cpu_ms_{role}" in row.cost else "-"
            for role in ROLES
        )
        if row.workload.endswith("unloaded"):
            lines.append(
                f"| {row.system} | {row.workload} | {row.workers} | | | "
                f"{row.p50:.1f} | {row.p95:.1f} | {row.p99:.1f} | | | |"
            )
            continue
        low, high = row.throughput_range
        lines.append(
            f"| {row.system} | {row.workload} | {row.workers} | **{row.throughput:,.0f}** "
            f"({low:,.0f}-{high:,.0f}) | {row.tasks_per_second:,.0f} | {row.p50:.1f} | "
            f"{row.p95:.1f} | {row.p99:.1f} | {cpu} | {row.cost.get('pg_transactions', 0):.1f} | "
            f"{row.cost.get('redis_commands', 0):.1f} |"
        )
    ratios = []
    for label, (a, b) in {
        "W1 throughput, Aiki / DBOS": (("aiki", "W1"), ("dbos", "W1")),
        "W5 throughput, Aiki / DBOS": (("aiki", "W5"), ("dbos", "W5")),
        "W1 throughput, Aiki / Celery (2 workers)": (("aiki", "W1"), ("celery", "W1")),
        "W1 throughput, asyncio task / trio task": (("aiki", "W1"), ("aiki", "W1 trio task")),
    }.items():
        mine = _find(rows, *a, DEFAULT_WORKERS if a[0] == "aiki" else None)
        theirs = _find(rows, *b, DEFAULT_WORKERS if b[0] == "celery" else None)
        if mine and theirs:
            ratios.append(f"| {label} | **{mine.throughput / theirs.throughput:.2f}** |")
    if ratios:
        lines += ["", "| ratio (same run) | value |", "|---|---:|", *ratios]
    found = verdicts(lambda system, workload, workers: _find(rows, system, workload, workers),
                     DEFAULT_WORKERS)  # fmt: skip
    lines += ["", *targets_table(found)]
    return "\n".join(lines)


def plots(rows: list[Row], samples: list[Sample], out: Path) -> list[Path]:
    """scaling.png and latency.png (needs matplotlib: ``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        print("matplotlib not installed: no plots (pip install -e '.[bench]')", file=sys.stderr)
        return []
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for system, style in (("aiki", "o-"), ("celery", "s--")):
        points = sorted(
            (r.workers, r.throughput)
            for r in rows
            if r.system == system and r.workload == "W1 scaling"
        )
        if points:
            axes.plot(*zip(*points, strict=True), style, label=f"{system} W1")
    dbos = _find(rows, "dbos", "W1")
    if dbos:
        axes.axhline(dbos.throughput, linestyle=":", color="grey", label="dbos W1 (1 process)")
    axes.set(
        xlabel="worker processes",
        ylabel="workflows/s",
        xticks=list(WORKER_COUNTS),
        title="W1 throughput vs workers (2 cores, everything on one machine)",
    )
    axes.legend()
    axes.grid(alpha=0.3)
    scaling = out / "scaling.png"
    figure.savefig(scaling, dpi=110, bbox_inches="tight")
    plt.close(figure)
    figure, (loaded, idle) = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, workloads, title in (
        (loaded, ("W1", "W5"), "under load (start → completed)"),
        (idle, ("W1 unloaded", "W5 unloaded"), "one at a time"),
    ):
        for system in ("aiki", "dbos", "celery"):
            for workload in workloads:
                values = sorted(
                    v
                    for s in samples
                    if (s.system, s.workload) == (system, workload)
                    and (
                        s.workers == DEFAULT_WORKERS
                        or system == "dbos"
                        or workload.endswith("unloaded")
                    )
                    for v in s.latencies_ms
                )
                if values:
                    shares = [(i + 1) / len(values) for i in range(len(values))]
                    axis.plot(values, shares, label=f"{system} {workload}")
        axis.set(
            xscale="log",
            xlabel="latency (ms, log)",
            ylabel="share of workflows",
            title=f"latency distribution, {title}",
        )
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    latency = out / "latency.png"
    figure.savefig(latency, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return [scaling, latency]


def main(argv: list[str]) -> None:
    """Run the suite and write its results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks suite")
    parser.add_argument("--n", type=int, default=2000, help="workflows per load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--unloaded", type=int, default=200, help="one-at-a-time samples")
    parser.add_argument("--no-peers", action="store_true", help="measure Aiki alone")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run the server without authentication (to measure its cost)",
    )
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="aiki server --processes (server processes sharing its port)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    peers = [] if args.no_peers else peers_available()
    if not args.no_peers and len(peers) < 2:
        print("peers missing (pip install -e '.[peers]'); measuring without them", file=sys.stderr)
    cluster = AikiCluster.start(
        "benchmarks.flows:suite_worker", DEFAULT_WORKERS, auth=not args.insecure_no_auth,
        server_processes=args.server_processes,
    )  # fmt: skip
    try:
        samples = trio.run(_run, cluster, args, peers)
    finally:
        cluster.stop()
    rows = summarize(samples)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, args)
    (args.out / "suite.md").write_text(table + "\n")
    (args.out / "suite.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "args": {"n": args.n, "rounds": args.rounds},
                "samples": [attrs.asdict(sample) for sample in samples],
            },
            indent=1,
        )
    )
    written = plots(rows, samples, args.out)
    print("\n" + table)
    files = [args.out / "suite.md", args.out / "suite.json", *written]
    print(f"\nwritten: {', '.join(str(path) for path in files)}")
