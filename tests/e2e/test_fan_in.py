"""Fan-in under load: many children end while their parents record waits on them.

Its own cluster with the default stall threshold: the waits module's 3 s threshold would
mark this backlog of 500 queued children as stalled, which is not what is tested here.
"""

from __future__ import annotations

from tests._deadline import deadline

from . import waits_flows as flows
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"


@deadline(120)
async def test_children_ending_while_their_parent_begins_waiting_are_never_missed(
    cluster: Cluster,
) -> None:
    """Fifty children end while the parent records its waits on them: each wait is either
    resolved at once (the child had ended) or by the child's end (it sees the wait). A
    missed one leaves the parent waiting forever (seen before begin_wait locked the child)."""
    async with cluster.client() as client:
        handles = [await flows.wide_flow.start(client, 50) for _ in range(10)]
        results = [await handle.wait_for_status("completed") for handle in handles]
    expected = sum(2 * x for x in range(1, 51))
    assert [(result.success, result.output) for result in results] == [(True, expected)] * 10
