"""DBOS Transact, the same workloads: W1 (one step), W5 (five steps), unloaded W1/W5.

    python -m benchmarks.peers.dbos_peer DATABASE_URL

DBOS runs workflows in the process that starts them (its usual deployment: the
application is the worker), with its state in PostgreSQL: here the suite's PostgreSQL,
in a database of its own. Latency under load is DBOS's own record (``created_at`` to
``updated_at`` of each workflow); unloaded latency is start → result in this process.
"""

from __future__ import annotations

import sys
import time

import psycopg
from dbos import DBOS

from ._protocol import serve


@DBOS.step()
def work(x: int) -> int:
    return x + 1


@DBOS.workflow()
def one_task(x: int) -> int:
    return work(x)


@DBOS.workflow()
def five_tasks(x: int) -> int:
    for _ in range(5):
        x = work(x)
    return x


WORKFLOWS = {"w1": one_task, "w5": five_tasks}


def _latencies(database_url: str, ids: list[str]) -> list[float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT updated_at - created_at FROM dbos.workflow_status"
            " WHERE workflow_uuid = ANY(%s)",
            (ids,),
        ).fetchall()
    return sorted(float(ms) for (ms,) in rows)


def main() -> None:
    """Launch DBOS on the given database and serve the suite's commands."""
    database_url = sys.argv[1]
    DBOS(
        config={
            "name": "aiki-bench",
            "system_database_url": database_url,
            "log_level": "WARNING",
            "sys_db_pool_size": 32,
        }
    )
    DBOS.launch()
    for x in range(20):
        DBOS.start_workflow(one_task, x).get_result()  # warm up

    def run(workload: str, count: int) -> dict[str, object]:
        if workload.startswith("unloaded-"):
            samples = []
            for x in range(count):
                began = time.perf_counter()
                DBOS.start_workflow(WORKFLOWS[workload.removeprefix("unloaded-")], x).get_result()
                samples.append((time.perf_counter() - began) * 1000)
            return {"latencies_ms": sorted(samples)}
        began = time.perf_counter()
        handles = []
        for x in range(count):
            handles.append(DBOS.start_workflow(WORKFLOWS[workload], x))
        for handle in handles:
            handle.get_result()
        seconds = time.perf_counter() - began
        ids = [handle.get_workflow_id() for handle in handles]
        return {"seconds": seconds, "latencies_ms": _latencies(database_url, ids)}

    try:
        serve(run)
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
