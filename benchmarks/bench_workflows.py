"""Workflow throughput and latency: W1 and W5 against real server and worker processes.

    python -m benchmarks workflows [--n 2000] [--workers 2] [--runs 3] [--inflight 64]

Starts PostgreSQL (fsync on) and Redis (or uses AIKI_DATABASE_URL / AIKI_REDIS_URL), one
``aiki server`` and ``--workers`` ``aiki worker`` processes. For each workload and round it
starts ``--n`` runs as fast as the client can (``--inflight`` concurrent starts) and waits
until all completed. Latency is start → completed as the server recorded it (the run's
``created_at`` to its ``updated_at`` at completion); throughput is runs / wall time from
the first start to the last completion. Also measured: unloaded latency, one run at a
time, as the client sees it (start → ``wait_for_status`` returns). Rounds interleave the
workloads; the table quotes medians.
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


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(
    client: aiki.Client,
    version: aiki.WorkflowVersion[int, int],
    n: int,
    inflight: int,
    database_url: str,
    label: str,
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    limit = trio.Semaphore(inflight)
    started = time.perf_counter()

    async def start(x: int) -> None:
        async with limit:
            await version.with_(reference_id=f"{tag}-{x}").start(client, x)

    def completed() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM aiki_runs"
                " WHERE reference_id LIKE %s AND status = 'completed'",
                (f"{tag}-%",),
            ).fetchone()
        return int(row[0]) if row else 0

    async with trio.open_nursery() as nursery:
        for x in range(n):
            nursery.start_soon(start, x)
        done = 0
        while done < n:
            await trio.sleep(0.2)
            done = await trio.to_thread.run_sync(completed)
            progress(done, n, label)
    elapsed = time.perf_counter() - started
    print(file=sys.stderr)

    def latencies() -> list[float]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM updated_at - created_at) FROM aiki_runs"
                " WHERE reference_id LIKE %s",
                (f"{tag}-%",),
            ).fetchall()
        return sorted(float(row[0]) * 1000 for row in rows)

    ms = await trio.to_thread.run_sync(latencies)
    return {"throughput": n / elapsed, "p50": ms[len(ms) // 2], "p99": ms[int(len(ms) * 0.99) - 1]}


async def _unloaded(
    client: aiki.Client, version: aiki.WorkflowVersion[int, int], count: int
) -> list[float]:
    samples = []
    for x in range(count):
        begin = time.perf_counter()
        handle = await version.start(client, x)
        await handle.wait_for_status("completed")
        samples.append((time.perf_counter() - begin) * 1000)
    return sorted(samples)


def main(argv: list[str]) -> None:
    """Run the workflow benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks workflows")
    parser.add_argument("--n", type=int, default=2000, help="runs per workload and round")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians over these)")
    parser.add_argument("--inflight", type=int, default=64, help="concurrent starts")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/workflows.json"))
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
            worker = start_aiki(
                ["worker", "benchmarks.flows:worker", "--server-url", url],
                base / f"worker{index}.log",
                {**env, "AIKI_API_KEY": keys["worker"]},
            )
            worker.wait_ready(r"aiki worker \S+ serving")
            processes.append(worker)
        results = trio.run(_bench, url, services.database_url, args, processes)
    finally:
        for process in reversed(processes):
            process.stop()
        for service in (services.redis, services.postgres):
            if service is not None:
                service.remove()
        if os.environ.get("AIKI_BENCH_KEEP_LOGS"):
            print(f"logs kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(
        f"\nMachine: {machine()}; server + {args.workers} workers + PostgreSQL (fsync on) + "
        f"Redis on this machine; {args.n} runs per workload and round\n"
    )
    print(table(results, {}))
    write_json(args.json, results)
    print(f"\nsamples: {args.json}")


async def _bench(
    url: str, database_url: str, args: argparse.Namespace, processes: list[AikiProcess]
) -> list[Measurement]:
    m = {
        key: Measurement(group, name, unit) for key, group, name, unit in [
            ("w1_tput", "W1", "workflows/s", "wf/s"), ("w1_tasks", "W1", "tasks/s", "tasks/s"),
            ("w1_p50", "W1", "start→completed p50 (server clock)", "ms"),
            ("w1_p99", "W1", "start→completed p99 (server clock)", "ms"),
            ("w5_tput", "W5", "workflows/s", "wf/s"), ("w5_tasks", "W5", "tasks/s", "tasks/s"),
            ("w5_p50", "W5", "start→completed p50 (server clock)", "ms"),
            ("w5_p99", "W5", "start→completed p99 (server clock)", "ms"),
            ("idle_p50", "W1 unloaded", "start→wait returns p50 (client)", "ms"),
            ("idle_p99", "W1 unloaded", "start→wait returns p99 (client)", "ms"),
            ("cpu_server", "CPU", "server CPU per W1+W5 round", "s"),
            ("cpu_workers", "CPU", "workers CPU per W1+W5 round", "s"),
        ]
    }  # fmt: skip
    async with aiki.Client(url) as client:
        await _unloaded(client, flows.one_task, 20)  # warm up connections and caches
        for round_ in range(args.runs):
            cpu_before = [_cpu_seconds(p.pid) for p in processes]
            for key, version, tasks in (("w1", flows.one_task, 1), ("w5", flows.five_tasks, 5)):
                result = await _load(
                    client, version, args.n, args.inflight, database_url, f"{key} r{round_ + 1}"
                )
                m[f"{key}_tput"].samples.append(result["throughput"])
                m[f"{key}_tasks"].samples.append(result["throughput"] * tasks)
                m[f"{key}_p50"].samples.append(result["p50"])
                m[f"{key}_p99"].samples.append(result["p99"])
            cpu_after = [_cpu_seconds(p.pid) for p in processes]
            m["cpu_server"].samples.append(cpu_after[0] - cpu_before[0])
            m["cpu_workers"].samples.append(sum(cpu_after[1:]) - sum(cpu_before[1:]))
            idle = await _unloaded(client, flows.one_task, 50)
            m["idle_p50"].samples.append(statistics.median(idle))
            m["idle_p99"].samples.append(idle[int(len(idle) * 0.99) - 1])
    return list(m.values())
