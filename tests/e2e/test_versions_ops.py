"""Versions an operator can see: which have open runs and who serves them, and no
silent wait when none does: a queued run of a version no live worker serves says so
(``runs show``, ``runs watch``), ``versions list`` shows since when, the servers warn in
their logs, and ``/metrics`` counts its open runs."""

from __future__ import annotations

import re
import uuid

import httpx
import trio

from tests._deadline import deadline
from tests._waiting import wait_until

from . import retry_flows as flows
from .conftest import Cluster, cli, ok_json

WORKER_TARGET = "tests.e2e.retry_flows:retry_worker"
SERVER_ARGS = ["--claim-timeout", "4"]
WORKER_ARGS = ["--heartbeat", "1"]


@deadline(120)
async def test_a_version_nobody_serves_is_seen_everywhere(cluster: Cluster) -> None:
    lonely, _ = await trio.to_thread.run_sync(cluster.start_worker,
                                              "tests.e2e.retry_flows:lonely_worker")  # fmt: skip
    served = ok_json(await cli(cluster, "versions", "list", "--json"))
    assert isinstance(served, list)
    (entry,) = [v for v in served if (v["workflow"], v["version"]) == ("e2e-lonely", "1")]
    assert len(entry["workers"]) == 1
    assert entry["unserved_since"] is None
    lonely.kill()

    async with cluster.client() as client:
        handle = await flows.lonely_flow.start(client, f"lonely-{uuid.uuid4().hex[:6]}")

        async def explained() -> bool:
            return (await client.describe_run(handle.run_id)).unserved is not None

        with trio.fail_after(20):
            await wait_until(explained, interval=0.1)
        assert (await handle.refresh()).status == "queued"
    started = await cli(cluster, "runs", "start", "e2e-lonely", "1", '"by the CLI"')
    assert started.returncode == 0, started.stderr
    assert "note: the run waits: no live worker serves e2e-lonely@1 since" in started.stderr

    shown = await cli(cluster, "runs", "show", handle.run_id)
    assert re.search(r"^waiting +no live worker serves e2e-lonely@1 since \d{4}-\d\d-\d\dT",
                     shown.stdout, re.MULTILINE), shown.stdout  # fmt: skip

    table = await cli(cluster, "versions", "list")
    assert table.stdout.splitlines()[0].split()[:3] == ["VERSION", "OPEN", "RUNS"]
    (row,) = [line for line in table.stdout.splitlines() if line.startswith("e2e-lonely@1 ")]
    assert re.match(r"e2e-lonely@1 +queued 2 +- +\d{4}-", row), row
    (order,) = [line for line in table.stdout.splitlines() if line.startswith("e2e-order@1 ")]
    assert re.match(r"e2e-order@1 +- +\S+, \S+ +-$", order), order  # (two workers, no runs)

    def warned() -> bool:
        logs = "".join(server.log.read_text(errors="replace") for server in cluster.servers)
        return "open runs of e2e-lonely@1 (namespace default) wait: no live worker" in logs

    with trio.fail_after(30):  # (after the worker timeout: 4 s here)
        await wait_until(lambda: trio.to_thread.run_sync(warned), interval=0.2)
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = await http.get(f"{cluster.url}/metrics", headers=cluster.headers("admin"))
    assert re.search(r'^aiki_unserved_open_runs\{namespace="default",version="1",'
                     r'workflow="e2e-lonely"\} 2\.0$', metrics.text, re.MULTILINE)  # fmt: skip

    # Served again: the run is taken and completes; nothing is left unserved.
    again, _ = await trio.to_thread.run_sync(cluster.start_worker,
                                             "tests.e2e.retry_flows:lonely_worker")  # fmt: skip
    try:
        async with cluster.client() as client:
            assert (await client.handle(handle.run_id).wait_for_status("completed")).success

            async def all_done() -> bool:
                (version,) = await client.list_versions(workflow="e2e-lonely")
                return (version.open_runs, version.unserved_since) == ({}, None)

            with trio.fail_after(20):
                await wait_until(all_done, interval=0.1)
    finally:
        await trio.to_thread.run_sync(again.stop)
