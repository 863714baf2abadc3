"""Many sleeping runs next to a stream of W1 workflows: cost and timer lateness.

    python -m benchmarks sleepers [--sleepers 10000] [--n 1500] [--workers 2] [--settle 0]

1. W1 baseline: ``--n`` one-task workflows through the server + workers.
2. Start ``--sleepers`` runs that each sleep until a time spread over 30 s, late enough
   that all of them are asleep (suspended, no worker slot) during step 3.
3. W1 again, with every sleeper asleep.
4. Wait for all sleepers to wake and complete; W1 once more (a second baseline).

Reports the W1 throughput ratio (with sleepers / mean of the baselines) and the timers'
firing lateness (``resolved_at - wake_at`` of each sleep, server clock).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import trio

import aiki
from tests._processes import AikiProcess, make_keys, start_aiki
from transport.local_services import services_from_env

from . import flows
from ._report import Measurement, machine, progress, table, write_json
from .bench_workflows import _load


def _count(database_url: str, sql: str, params: tuple[object, ...]) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


async def _start_sleepers(
    client: aiki.Client, count: int, wake_from: float, tag: str, database_url: str
) -> None:
    limit = trio.Semaphore(64)

    async def start(index: int) -> None:
        seconds = wake_from - time.time() + 30.0 * index / count
        async with limit:
            await flows.sleeper.with_(reference_id=f"{tag}-{index}").start(client, seconds)

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(start, index)
        asleep = 0
        while asleep < count:
            await trio.sleep(0.5)
            asleep = await trio.to_thread.run_sync(
                _count, database_url, "SELECT count(*) FROM aiki_runs WHERE reference_id LIKE %s"
                " AND status = 'sleeping'", (f"{tag}-%",),
            )  # fmt: skip
            progress(asleep, count, "asleep")
    print(file=sys.stderr)


async def _bench(url: str, database_url: str, args: argparse.Namespace) -> list[Measurement]:
    m = {key: Measurement(group, name, unit) for key, group, name, unit in [
        ("base", "W1", "baseline workflows/s (mean of before and after)", "wf/s"),
        ("with", "W1", f"workflows/s with {args.sleepers} runs asleep", "wf/s"),
        ("ratio", "W1", "with sleepers / baseline", "ratio"),
        ("late50", "timers", "wake-up lateness p50", "ms"),
        ("late99", "timers", "wake-up lateness p99", "ms"),
        ("latemax", "timers", "wake-up lateness max", "ms"),
        ("start", "sleepers", "time to put all to sleep", "s"),
    ]}  # fmt: skip
    async with aiki.Client(url) as client:
        for round_ in range(args.runs):
            before = await _load(client, flows.one_task, args.n, 64, database_url, "w1 before")
            tag = uuid.uuid4().hex[:8]
            began = time.time()
            # Wake late enough that step 3 (~n / 50 s at worst) runs while all sleep.
            wake_from = began + args.sleepers / 60 + args.n / 40 + 20 + args.settle
            await _start_sleepers(client, args.sleepers, wake_from, tag, database_url)
            m["start"].samples.append(time.time() - began)
            # Optionally let PostgreSQL absorb the burst of inserts (autovacuum, checkpoint)
            # first, so the next measurement sees the steady state with every run asleep.
            await trio.sleep(args.settle)
            vacuuming = await trio.to_thread.run_sync(
                _count, database_url, "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'autovacuum worker'", (),
            )  # fmt: skip
            print(f"  autovacuum workers busy as the measurement starts: {vacuuming}",
                  file=sys.stderr)  # fmt: skip
            during = await _load(client, flows.one_task, args.n, 64, database_url, "w1 asleep")
            still_asleep = await trio.to_thread.run_sync(
                _count, database_url, "SELECT count(*) FROM aiki_runs WHERE reference_id LIKE %s"
                " AND status = 'sleeping'", (f"{tag}-%",),
            )  # fmt: skip
            if still_asleep < args.sleepers:
                print(f"  warning: only {still_asleep} still asleep during the measurement",
                      file=sys.stderr)  # fmt: skip
            done = 0
            while done < args.sleepers:
                await trio.sleep(1)
                done = await trio.to_thread.run_sync(
                    _count, database_url, "SELECT count(*) FROM aiki_runs"
                    " WHERE reference_id LIKE %s AND status = 'completed'", (f"{tag}-%",),
                )  # fmt: skip
                progress(done, args.sleepers, "woken")
            print(file=sys.stderr)
            after = await _load(client, flows.one_task, args.n, 64, database_url, "w1 after")

            def lateness(tag: str = tag) -> list[float]:
                with psycopg.connect(database_url) as conn:
                    rows = conn.execute(
                        "SELECT extract(epoch FROM w.resolved_at - w.wake_at) * 1000"
                        " FROM aiki_waits w JOIN aiki_runs r ON r.id = w.run_id"
                        " WHERE r.reference_id LIKE %s AND w.kind = 'sleep'", (f"{tag}-%",),
                    ).fetchall()  # fmt: skip
                return sorted(float(row[0]) for row in rows)

            late = await trio.to_thread.run_sync(lateness)
            baseline = statistics.mean([before["throughput"], after["throughput"]])
            m["base"].samples.append(baseline)
            m["with"].samples.append(during["throughput"])
            m["ratio"].samples.append(during["throughput"] / baseline)
            m["late50"].samples.append(late[len(late) // 2])
            m["late99"].samples.append(late[int(len(late) * 0.99) - 1])
            m["latemax"].samples.append(late[-1])
            p99 = late[int(len(late) * 0.99) - 1]
            print(
                f"  round {round_ + 1}: baseline {baseline:.1f}, with sleepers "
                f"{during['throughput']:.1f} wf/s; lateness p99 {p99:.0f} ms",
                file=sys.stderr,
            )
    return list(m.values())


def main(argv: list[str]) -> None:
    """Run the sleepers benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks sleepers")
    parser.add_argument("--sleepers", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=1500, help="W1 runs per measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait once all are asleep, before measuring")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/sleepers.json"))
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="aiki-bench-"))
    services = services_from_env(base, fsync=True)
    processes: list[AikiProcess] = []
    env = {"AIKI_DATABASE_URL": services.database_url, "AIKI_REDIS_URL": services.redis_url}
    try:
        server = start_aiki(["server", "--port", "0"], base / "server.log", env)
        processes.append(server)
        url = server.wait_ready(r"listening on (\S+)").group(1)
        keys = make_keys(services.database_url, url)  # this process: the client key
        os.environ["AIKI_API_KEY"] = keys["client"]
        for index in range(args.workers):
            worker = start_aiki(["worker", "benchmarks.flows:sleeper_worker", "--server-url", url],
                                base / f"worker{index}.log",
                                {**env, "AIKI_API_KEY": keys["worker"]})  # fmt: skip
            worker.wait_ready(r"aiki worker \S+ serving")
            processes.append(worker)
        results = trio.run(_bench, url, services.database_url, args)
    finally:
        for process in reversed(processes):
            process.stop()
        for service in (services.redis, services.postgres):
            if service is not None:
                service.remove()
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\nMachine: {machine()}; server + {args.workers} workers + PostgreSQL (fsync on) + "
        f"Redis on this machine; {args.sleepers} sleepers, {args.n} W1 per measurement\n"
    )
    print(table(results, {}))
    write_json(args.json, results)
    print(f"\nsamples: {args.json}")
