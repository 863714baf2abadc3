"""Concurrency limits end to end: under load from several client sessions, on three
server processes, with a worker and a server SIGKILLed mid-load, no limit is ever
exceeded (computed from the transition history), and every run completes once."""

from __future__ import annotations

import itertools
import random
import uuid

import psycopg
import trio

import aiki
from tests._deadline import deadline
from tests._holding import most_holding

from . import limit_flows as flows
from ._load import RETRY, completions
from .conftest import THREE_SERVERS, Cluster

TOPOLOGIES = (THREE_SERVERS,)
WORKER_TARGET = "tests.e2e.limit_flows:limit_worker"
SERVER_ARGS = ["--claim-timeout", "3"]
WORKER_ARGS = ["--heartbeat", "0.3"]

CUSTOMERS = 6
RUNS = 120


def _history(cluster: Cluster, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """Every transition of the runs, in the order the database wrote them."""
    with psycopg.connect(cluster.database_url) as conn:
        rows = conn.execute(
            "SELECT run_id::text, to_status, reason FROM aiki_transitions"
            " WHERE run_id = ANY(%s::uuid[]) ORDER BY id",
            (run_ids,),
        ).fetchall()
    return [(str(run), str(to), str(reason)) for run, to, reason in rows]


async def _load(cluster: Cluster, clients: int, some_started: trio.Event) -> dict[str, int]:
    """Start `RUNS` runs over ``clients`` sessions; each start repeated (same reference
    ID) while the server it went to is unavailable. Returns each run's customer."""
    customers: dict[str, int] = {}
    tag = uuid.uuid4().hex[:8]

    async def client_runs(offset: int) -> None:
        async with cluster.client() as client:
            for n in range(offset, RUNS, clients):
                job = flows.Job(customer=n % CUSTOMERS, n=n)
                version = flows.limited_flow.with_(reference_id=f"{tag}-{n}")
                for delay in itertools.islice(RETRY.delays(random.Random()), 50):
                    try:
                        handle = await version.start(client, job)
                        break
                    except aiki.UnavailableError:
                        await trio.sleep(delay)
                else:
                    raise AssertionError(f"start {n} never got through")
                customers[handle.run_id] = job.customer
                if len(customers) >= RUNS // 4:
                    some_started.set()

    async with trio.open_nursery() as nursery:
        for offset in range(clients):
            nursery.start_soon(client_runs, offset)
    return customers


@deadline(240)
async def test_no_limit_is_exceeded_under_load_with_a_worker_and_a_server_killed(
    cluster: Cluster,
) -> None:
    customers: dict[str, int] = {}
    some_started = trio.Event()
    async with trio.open_nursery() as nursery:

        async def load() -> None:
            customers.update(await _load(cluster, 4, some_started))

        nursery.start_soon(load)
        with trio.fail_after(60):
            await some_started.wait()
        cluster.workers[0].kill()  # its claims lapse; its runs keep their slots, then go on
        replacement, _ = await trio.to_thread.run_sync(cluster.start_worker, WORKER_TARGET)
        cluster.workers.append(replacement)  # (stopped with the cluster)
        cluster.servers[1].kill()
    assert len(customers) == RUNS
    async with cluster.client() as client:
        with trio.fail_after(120):
            for run_id in customers:
                result = await client.handle(run_id).wait_for_status("completed")
                assert result.success, result
    run_ids = list(customers)
    counts = await trio.to_thread.run_sync(completions, cluster, run_ids)
    assert counts == dict.fromkeys(run_ids, 1)
    history = await trio.to_thread.run_sync(_history, cluster, run_ids)
    per_customer, total = most_holding(history, {run: str(c) for run, c in customers.items()})
    assert per_customer == {str(c): flows.PER_CUSTOMER.per_key for c in range(CUSTOMERS)}
    assert total == flows.DOWNSTREAM.per_key
