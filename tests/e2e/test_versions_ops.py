"""Versions an operator can see: which have open runs and who serves them, and no
silent wait when none does: a queued run of a version no live worker serves says so
(``runs show``, ``runs watch``), ``versions list`` shows since when, the servers warn in
their logs, and ``/metrics`` counts its open runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import httpx
import trio

from aiki.protocol import StartRun
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

    # Watched, the run says why it waits, then (served again) how it completes.
    env = {**os.environ, "AIKI_SERVER_URL": cluster.server_urls,
           "AIKI_API_KEY": cluster.keys["viewer"]}  # fmt: skip
    watch = await trio.to_thread.run_sync(lambda: subprocess.Popen(
        [sys.executable, "-m", "aiki", "runs", "watch", handle.run_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
    try:
        assert watch.stdout is not None
        first = await trio.to_thread.run_sync(watch.stdout.readline)
        assert first.startswith("(waiting: no live worker serves e2e-lonely@1 since "), first
        again, _ = await trio.to_thread.run_sync(cluster.start_worker,
                                                 "tests.e2e.retry_flows:lonely_worker")  # fmt: skip
        with trio.fail_after(30):
            rest, _ = await trio.to_thread.run_sync(watch.communicate)
        assert watch.returncode == 0
        assert "queued -> running" in rest
        assert "running -> completed" in rest.splitlines()[-1]
    finally:
        watch.kill()
    try:
        async with cluster.client() as client:
            assert (await client.handle(handle.run_id).wait_for_status("completed")).success

            async def all_done() -> bool:
                (version,) = await client.list_versions(workflow="e2e-lonely")
                return (version.open_runs, version.unserved_since) == ({}, None)

            with trio.fail_after(20):
                await wait_until(all_done, interval=0.1)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(40):
            await trio.to_thread.run_sync(again.stop)


@deadline(120)
async def test_a_moved_input_class_serves_the_same_version_a_changed_field_does_not(
    cluster: Cluster,
) -> None:
    """``e2e-moving@1`` is served by a worker; restarted with its input class moved to
    another module and renamed, the worker registers the same version and serves its
    runs; one whose input has a field of another type is refused at start."""
    async with cluster.client() as client:
        outputs = []
        for variant in ("v1", "moved"):
            target = f"tests.e2e.moving_{variant}:worker"
            worker, _ = await trio.to_thread.run_sync(cluster.start_worker, target)
            try:
                started = await client.start_run(
                    StartRun(
                        workflow="e2e-moving", version="1", input={"key": variant, "weight": 3}
                    )
                )
                done = await client.handle(started.run.id).wait_for_status("completed")
                outputs.append(done.output)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(40):
                    await trio.to_thread.run_sync(worker.stop)
        assert outputs == ["v1: 3", "moved: 3"]

    changed = cluster.spawn_worker("tests.e2e.moving_changed:worker", cluster.server_urls)
    try:
        with trio.fail_after(60):
            code = await trio.to_thread.run_sync(changed.process.wait)
    finally:
        changed.kill()
    assert code != 0
    log = changed.log.read_text(errors="replace")
    assert "e2e-moving@1 is registered with another input or event schema" in log, log
