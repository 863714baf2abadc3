"""Load for the end-to-end failover tests: many W1 runs started over several client
sessions, each start repeated with its reference ID while the server is unavailable, and
how many times each run completed."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable

import psycopg
import trio

import aiki
from actors import Backoff

from . import flows
from .conftest import Cluster

RETRY = Backoff(initial_seconds=0.05, max_seconds=0.5)
"""How a start refused as unavailable is repeated."""


def completions(cluster: Cluster, run_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(cluster.database_url) as conn:
        rows = conn.execute(
            "SELECT run_id::text, count(*) FROM aiki_transitions"
            " WHERE to_status = 'completed' AND run_id = ANY(%s::uuid[]) GROUP BY run_id",
            (run_ids,),
        ).fetchall()
    return {str(run_id): int(count) for run_id, count in rows}  # type: ignore[call-overload]


async def run_many(
    cluster: Cluster, count: int, clients: int, some_started: trio.Event | None = None
) -> dict[str, int]:
    """Start ``count`` W1 runs over ``clients`` sessions (spread over the processes);
    return each run's input by run ID. ``some_started`` is set after a sixth of them.

    Each start has a reference ID and is repeated while the server is unavailable (its
    process died with the start in flight), as a client should: the run exists once."""
    inputs: dict[str, int] = {}
    tag = uuid.uuid4().hex[:8]

    async def client_runs(offset: int) -> None:
        async with cluster.client() as client:
            for x in range(offset, count, clients):
                version = flows.one_task.with_(reference_id=f"{tag}-{x}")
                for delay in itertools.islice(RETRY.delays(random.Random()), 50):
                    try:
                        handle = await version.start(client, x)
                        break
                    except aiki.UnavailableError:
                        await trio.sleep(delay)  # the client's backoff before starting again
                else:
                    raise AssertionError(f"start {x} never got through")
                inputs[handle.run_id] = x
                if some_started is not None and len(inputs) >= count // 6:
                    some_started.set()

    async with trio.open_nursery() as nursery:
        for offset in range(clients):
            nursery.start_soon(client_runs, offset)
    return inputs


async def run_many_with_fault(
    cluster: Cluster, count: int, clients: int, fault: Callable[[], None]
) -> dict[str, int]:
    """`run_many`, with ``fault()`` called once a sixth of the runs started (the rest
    start through it)."""
    inputs: dict[str, int] = {}
    some_started = trio.Event()
    async with trio.open_nursery() as nursery:

        async def load() -> None:
            inputs.update(await run_many(cluster, count, clients, some_started))

        nursery.start_soon(load)
        with trio.fail_after(30):
            await some_started.wait()
        fault()
    return inputs
