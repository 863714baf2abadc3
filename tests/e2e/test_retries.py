"""Retrying failed runs after a fix, end to end: a run that failed on a bug is queued
again once the fix is deployed, replays what completed (its task bodies do not run
again) and runs what failed; alone, with its failed children, and in bulk."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
import trio

import aiki
from tests._deadline import deadline
from tests._waiting import wait_until

from . import retry_flows as flows
from .conftest import Cluster, cli, ok_json

WORKER_TARGET = "tests.e2e.retry_flows:retry_worker"


def _query(cluster: Cluster, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def _counts(cluster: Cluster, prefix: str) -> dict[str, int]:
    """Executions of each task body over the keys starting with ``prefix``."""
    rows = await trio.to_thread.run_sync(
        _query, cluster,
        "SELECT task, count(*) FROM e2e_effects WHERE key LIKE %s GROUP BY task",
        (f"{prefix}%",),
    )  # fmt: skip
    return {str(task): int(str(count)) for task, count in rows}


async def _deploy_fix(cluster: Cluster, fix: str) -> None:
    await trio.to_thread.run_sync(_query, cluster, "INSERT INTO e2e_gates VALUES (%s) "
                                  "RETURNING key", (fix,))  # fmt: skip


@deadline(90)
async def test_a_failed_run_retried_after_the_fix_completes_without_redoing_its_work(
    cluster: Cluster,
) -> None:
    nonce = uuid.uuid4().hex[:8]
    order = flows.Order(key=f"one-{nonce}", fix=f"fix-{nonce}")
    async with cluster.client() as client:
        handle = await flows.order_flow.with_(reference_id=f"order-{nonce}").start(client, order)
        failed = await handle.wait_for_status("failed")
        assert failed.status == "failed"
        assert await _counts(cluster, order.key) == {"prepare": 1, "charge": 1}
        logs = "".join(worker.log.read_text(errors="replace") for worker in cluster.workers)
        assert f"run {handle.run_id}: task 'charge' failed (attempt 1)" in logs
        assert f"run {handle.run_id} of e2e-order@1 failed: " in logs

        refused = await cli(cluster, "runs", "retry", handle.run_id, role="viewer")
        assert refused.returncode == 1, refused.stderr
        await _deploy_fix(cluster, order.fix)
        # By its reference ID, as people know it.
        retried = await cli(cluster, "runs", "retry", f"order-{nonce}")
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == f"run {handle.run_id} is queued again"

        done = await handle.wait_for_status("completed")
        assert done.output == "prepared+charged"
        assert await _counts(cluster, order.key) == {"prepare": 1, "charge": 2}
        details = await client.describe_run(handle.run_id)
        assert (details.run.attempt, details.run.error) == (1, None)
        assert [(s.previous, s.status) for s in details.timeline][-4:] == [
            ("running", "failed"), ("failed", "queued"), ("queued", "running"),
            ("running", "completed")]  # fmt: skip
        assert "retried" in (details.timeline[-3].reason or "")

        # Found by its reference ID wherever a run is named.
        shown = await cli(cluster, "runs", "show", f"order-{nonce}")
        assert shown.returncode == 0, shown.stderr
        assert f"run        {handle.run_id}" in shown.stdout
        listed = await cli(cluster, "runs", "list", "--reference-id", f"order-{nonce}")
        assert listed.stdout.splitlines()[0].split()[:4] == ["ID", "WORKFLOW", "STATUS",
                                                             "REFERENCE"]  # fmt: skip
        assert f"order-{nonce}" in listed.stdout.splitlines()[1]
        unknown = await cli(cluster, "runs", "show", f"no-such-{nonce}")
        assert unknown.returncode == 3
        assert f"no run with reference ID 'no-such-{nonce}'" in unknown.stderr

        again = await cli(cluster, "runs", "retry", handle.run_id)
        assert again.returncode == 1
        assert "only failed runs can be retried" in again.stderr

        # The SDK finds it too; a reference ID two workflows use names neither alone.
        assert (await client.find_run(f"order-{nonce}")).id == handle.run_id
        other = await flows.batch_flow.with_(reference_id=f"order-{nonce}").start(client, order)
        with pytest.raises(aiki.ConflictError, match="names several runs"):
            await client.find_run(f"order-{nonce}")
        found = await client.find_run(f"order-{nonce}", workflow="e2e-batch", version="1")
        assert found.id == other.run_id
        ambiguous = await cli(cluster, "runs", "show", f"order-{nonce}")
        assert ambiguous.returncode == 1
        assert "give the workflow and version, or a run ID" in ambiguous.stderr
        await other.wait_for_status("completed")


@deadline(90)
async def test_a_failed_parent_is_retried_with_its_failed_child(cluster: Cluster) -> None:
    nonce = uuid.uuid4().hex[:8]
    order = flows.Order(key=f"tree-{nonce}", fix=f"fix-{nonce}")
    async with cluster.client() as client:
        parent = await flows.batch_flow.start(client, order)
        await parent.wait_for_status("failed")
        children = await client.list_runs(parent_id=parent.run_id)
        assert [(run.workflow, run.status) for run in children.runs] == [("e2e-order", "failed")]
        child = children.runs[0]

        shown = await cli(cluster, "runs", "show", parent.run_id)
        assert shown.returncode == 0, shown.stderr
        assert re.search(rf"^children\n.*\n{child.id} +e2e-order@1 +failed", shown.stdout,
                         re.MULTILINE), shown.stdout  # fmt: skip
        listed = ok_json(await cli(cluster, "runs", "list", "--parent", parent.run_id, "--json"))
        assert isinstance(listed, dict)
        assert [run["id"] for run in listed["runs"]] == [child.id]

        refused = await cli(cluster, "runs", "retry", child.id)
        assert refused.returncode == 1
        assert "retry the top-level run" in refused.stderr

        await _deploy_fix(cluster, order.fix)
        reply = await client.retry(parent.run_id)
        assert reply.run_ids == (parent.run_id,)
        assert sorted(reply.affected) == sorted([parent.run_id, child.id])
        done = await parent.wait_for_status("completed")
        assert done.output == "batch: prepared+charged"
        assert await _counts(cluster, order.key) == {"prepare": 2, "charge": 2}
        # ("prepare" ran once for the batch, once for the order; neither again)


@deadline(180)
async def test_bulk_retry_of_a_hundred_failed_runs(cluster: Cluster) -> None:
    """``aiki runs retry --workflow --status failed --since``: 120 failed runs, all
    queued again (over several pages), all complete; no completed task runs again."""
    nonce = uuid.uuid4().hex[:8]
    fix = f"fix-{nonce}"
    async with cluster.client() as client:
        before = await client.list_runs(workflow="e2e-order", statuses=("failed",), limit=500)
        old = {run.id for run in before.runs}
        handles = []
        for index in range(120):
            order = flows.Order(key=f"bulk-{nonce}-{index}", fix=fix)
            handles.append(await flows.order_flow.start(client, order))
        for handle in handles:
            await handle.wait_for_status("failed")
        assert await _counts(cluster, f"bulk-{nonce}-") == {"prepare": 120, "charge": 120}

        await _deploy_fix(cluster, fix)
        retried = ok_json(await cli(cluster, "runs", "retry", "--workflow", "e2e-order",
                                    "--status", "failed", "--since", "10m", "--json"))  # fmt: skip
        assert isinstance(retried, dict)
        ids = set(retried["run_ids"]) - old
        assert ids == {handle.run_id for handle in handles}
        for handle in handles:
            assert (await handle.wait_for_status("completed")).output == "prepared+charged"
        assert await _counts(cluster, f"bulk-{nonce}-") == {"prepare": 120, "charge": 240}

        async def none_failed() -> bool:
            page = await client.list_runs(workflow="e2e-order", statuses=("failed",), limit=500)
            return not ({run.id for run in page.runs} & ids)

        await wait_until(none_failed)
