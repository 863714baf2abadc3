"""Live updates: commit-to-subscriber latency, unloaded and under W1 load.

A subscriber watches every run while a client starts one-task workflows at a steady rate
(``--rate`` per second) on a cluster with two workers. Each update's latency is the time
it reached the subscriber minus its ``at`` (the committing transaction's start on the
PostgreSQL clock, same machine): an upper bound of commit → push → decode.

    python -m benchmarks live [--seconds 10] [--rate 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

import aiki

from . import flows
from ._cluster import AikiCluster
from ._report import progress


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _measure(url: str, seconds: float, rate: float) -> tuple[list[float], int]:
    """Latencies (ms) of every update seen while starting runs at ``rate`` for ``seconds``."""
    latencies: list[float] = []
    expected: set[str] = set()
    completed: set[str] = set()
    async with aiki.Client(url) as watcher, aiki.Client(url) as starter:
        updates = watcher.watch()
        await updates.start()
        finished = trio.Event()

        async def collect() -> None:
            async for update in updates:
                if isinstance(update, aiki.RunUpdate):
                    latencies.append((time.time() - update.at.timestamp()) * 1000)
                    if update.status == "completed":
                        completed.add(update.run_id)
                        if starting_done and expected <= completed:
                            finished.set()
                            return

        starting_done = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            total = max(1, int(seconds * rate))
            begin = trio.current_time()
            for index in range(total):
                await trio.sleep_until(begin + index / rate)
                handle = await flows.one_task.start(starter, index)
                expected.add(handle.run_id)
                progress(index + 1, total, f"live {rate:g}/s")
            starting_done = True
            if expected <= completed:
                finished.set()
            with trio.fail_after(60):
                await finished.wait()
            nursery.cancel_scope.cancel()
        await updates.aclose()
    return latencies, len(completed)


def main(argv: list[str]) -> None:
    """Measure and print the latency table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks live")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="W1 starts per second")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = AikiCluster.start("benchmarks.flows:suite_worker", 2)
    rows = []
    try:
        for load, rate in (("unloaded (5/s)", 5.0), (f"W1 at {args.rate:g}/s", args.rate)):
            p50s, p95s, p99s = [], [], []
            for _ in range(args.rounds):
                seconds = args.seconds if rate > 5 else max(4.0, args.seconds / 2)
                latencies, _ = trio.run(_measure, cluster.url, seconds, rate)
                p50s.append(_percentile(latencies, 0.50))
                p95s.append(_percentile(latencies, 0.95))
                p99s.append(_percentile(latencies, 0.99))
            rows.append((load, statistics.median(p50s), statistics.median(p95s),
                         statistics.median(p99s), len(latencies)))  # fmt: skip
    finally:
        cluster.stop()
    print("\n| load | p50 ms | p95 ms | p99 ms | updates/round |")
    print("|---|---:|---:|---:|---:|")
    for load, p50, p95, p99, count in rows:
        print(f"| {load} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {count} |")
