"""Three servers on a Redis Cluster, one of them SIGKILLed under load: the workers that
were connected to it carry on through the others with their claims, clients move on to
the others, every run completes, none twice."""

from __future__ import annotations

import re

import trio

from tests._deadline import deadline
from tests._waiting import wait_until

from ._load import completions, run_many_with_fault
from .conftest import THREE_SERVERS, Cluster

TOPOLOGIES = (THREE_SERVERS,)
SERVER_ARGS = ["--claim-timeout", "3"]
"""A short claim timeout: a run claimed in the killed server's last moment (its claim's
answer lost with it) is released by another server's claim sweeper."""
WORKER_ARGS = ["--heartbeat", "0.3", "-v"]
"""Verbose: the workers log which server each session is with."""

_CONNECTED = re.compile(r"worker (\S+) (?:re)?connected to (\S+)")


def _sessions(cluster: Cluster) -> list[list[str]]:
    """Each worker's servers, in the order it connected to them."""
    return [[found.group(2) for found in _CONNECTED.finditer(worker.log.read_text())]
            for worker in cluster.workers]  # fmt: skip


@deadline(150)
async def test_killing_one_of_three_servers_under_load_loses_no_run_and_runs_none_twice(
    cluster: Cluster,
) -> None:
    """SIGKILL the server a worker is connected to while 150 runs start over six client
    sessions (spread over the three servers): the worker connects to another server and
    finishes its runs there; clients repeat starts that were in flight (reference IDs)
    on the others; every run completes exactly once."""
    first = _sessions(cluster)
    assert all(first), first
    victim_url = first[0][-1]
    victim = cluster.urls.index(victim_url)
    inputs = await run_many_with_fault(cluster, 150, 6, cluster.servers[victim].kill)

    async def moved_on() -> bool:
        return all(sessions[-1] != victim_url for sessions in _sessions(cluster))

    with trio.fail_after(30):
        await wait_until(moved_on)
    async with cluster.client() as client:
        for run_id, x in inputs.items():
            result = await client.handle(run_id).wait_for_status("completed")
            assert (result.success, result.output) == (True, 2 * x)
        workers = {info.id: info for info in await client.list_workers()}
    counts = await trio.to_thread.run_sync(completions, cluster, list(inputs))
    assert len(inputs) == 150
    assert counts == dict.fromkeys(inputs, 1)
    moved = _sessions(cluster)[0]
    assert moved[-1] in cluster.urls
    assert moved[-1] != victim_url
    worker_id = _CONNECTED.search(cluster.workers[0].log.read_text()).group(1)  # type: ignore[union-attr]
    assert workers[worker_id].alive  # its heartbeats go through the server it moved to
