"""Where one unloaded run's time goes, segment by segment.

    python -m benchmarks path [--n 150] [--workload W1|W1-trio|W5] [--rounds 3]

One run at a time (nothing else loads the machine): the client starts it and waits for
its end, recording when it sent the start, when the start returned and when it saw the
end; the run's recorded transitions say when the server began the start's transaction
(``queued``), the claim's (``running``) and the completion's (``completed``); all on
this machine's clock. Prints the median and p90 of each segment (medians over rounds):

- client → start committing: the request reaching the server's transaction;
- start committing → start returned: the commit and the reply;
- start committing → claimed: publish (outbox or fast lane), the worker's read, its claim;
- claimed → completing: the claim's commit and reply, the handler and its task, the
  worker's completion request;
- completing → client sees it: the completion's commit and the push to the client.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Final

import psycopg
import trio

import aiki

from . import flows
from ._cluster import AikiCluster

SEGMENTS: Final = (
    "client -> start committing",
    "start committing -> start returned",
    "start committing -> claimed",
    "claimed -> completing",
    "completing -> client sees it",
    "total",
)
WARM_UP: Final = 30

Timed = list[tuple[str, float, float, float]]
"""Per run: its ID, when the start was sent, when it returned, when the end was seen."""


async def _runs(client: aiki.Client, version: aiki.WorkflowVersion[int, int], count: int) -> Timed:
    timed = []
    for x in range(count):
        sent = time.time()
        handle = await version.start(client, x)
        returned = time.time()
        await handle.wait_for_status("completed")
        timed.append((handle.run_id, sent, returned, time.time()))
    return timed


def _segments(
    database_url: str, timed: list[tuple[str, float, float, float]]
) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    with psycopg.connect(database_url) as conn:
        for run_id, sent, returned, seen in timed:
            at: dict[str, float] = {}
            for status, moment in conn.execute(
                "SELECT to_status, extract(epoch FROM at)::float8 FROM aiki_transitions"
                " WHERE run_id = %s ORDER BY id", (run_id,),
            ).fetchall():  # fmt: skip
                at.setdefault(str(status), float(moment))
            ms = (at["queued"] - sent, returned - at["queued"], at["running"] - at["queued"],
                  at["completed"] - at["running"], seen - at["completed"], seen - sent)  # fmt: skip
            for name, seconds in zip(SEGMENTS, ms, strict=True):
                found[name].append(seconds * 1000)
    return found


def main(argv: list[str]) -> None:
    """Measure and print the segments."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks path")
    parser.add_argument("--n", type=int, default=150, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=("W1", "W1-trio", "W5"), default="W1")
    args = parser.parse_args(argv)
    version = {"W1": flows.one_task, "W1-trio": flows.one_trio_task,
               "W5": flows.five_tasks}[args.workload]  # fmt: skip
    cluster = AikiCluster.start("benchmarks.flows:suite_worker", 2)
    rounds: list[dict[str, list[float]]] = []
    try:

        async def measure() -> Timed:
            async with aiki.Client(cluster.url, api_key=cluster.keys.get("client")) as client:
                await _runs(client, version, WARM_UP)
                return await _runs(client, version, args.n)

        for _ in range(args.rounds):
            rounds.append(_segments(cluster.services.database_url, trio.run(measure)))
    finally:
        cluster.stop()
    print(f"\n{args.workload}, {args.n} runs x {args.rounds} rounds, medians over rounds\n")
    print("| segment | p50 ms | p90 ms |")
    print("|---|---:|---:|")
    for name in SEGMENTS:
        p50 = statistics.median(statistics.median(found[name]) for found in rounds)
        p90 = statistics.median(sorted(found[name])[int(len(found[name]) * 0.9)]
                                for found in rounds)  # fmt: skip
        print(f"| {name} | {p50:.2f} | {p90:.2f} |")
