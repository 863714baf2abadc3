"""Where task bodies run, end to end: ``async def`` tasks written for asyncio use asyncio
libraries unchanged, trio and anyio bodies work too, cancellation reaches an asyncio body,
and a body that blocks its event loop fails with a clear error instead of taking its
worker down."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import trio

from tests._deadline import deadline
from tests._waiting import wait_until

from . import loop_flows as flows
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.loop_flows:loops_worker"
WORKER_ARGS = ["--block-limit", "1"]


def _effect_times(cluster: Cluster, key: str) -> dict[str, float]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT task, extract(epoch FROM at) FROM e2e_effects WHERE key = %s",
                            (key,)).fetchall()  # fmt: skip
    return {str(task): float(at) for task, at in rows}


@deadline(60)
async def test_task_bodies_run_on_the_loop_they_were_written_for(cluster: Cluster) -> None:
    """An asyncio body uses ``redis.asyncio`` and ``asyncio.sleep``; a trio body uses
    ``trio.sleep``; anyio bodies run on either loop."""
    async with cluster.client() as client:
        handle = await flows.loops_flow.start(
            client, flows.Probe(key=uuid.uuid4().hex[:8], redis_url=cluster.redis_url)
        )
        result = await handle.wait_for_status("completed")
    assert result.success, result.error
    assert result.output == [
        "stored on asyncio",
        "1 on trio",
        "2 via anyio on asyncio",
        "3 via anyio on trio",
    ]


@deadline(60)
async def test_cancelling_a_run_stops_its_asyncio_task_body_within_a_second(
    cluster: Cluster,
) -> None:
    key = f"cancel-{uuid.uuid4().hex[:6]}"
    async with cluster.client() as client:
        handle = await flows.cancelled_flow.start(client, key)

        async def started() -> bool:
            return "started" in await trio.to_thread.run_sync(_effect_times, cluster, key)

        with trio.fail_after(30):
            await wait_until(started)
        cancelled_at = time.time()
        await handle.cancel()

        async def body_cancelled() -> bool:
            return "cancelled" in await trio.to_thread.run_sync(_effect_times, cluster, key)

        with trio.fail_after(10):
            await wait_until(body_cancelled)
        result = await handle.wait_for_status("cancelled")
    assert result.status == "cancelled"
    stopped_after = (await trio.to_thread.run_sync(_effect_times, cluster, key))["cancelled"]
    print(f"\nasyncio body stopped {stopped_after - cancelled_at:.3f} s after the cancel")
    assert stopped_after - cancelled_at < 1.0


@deadline(60)
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
async def test_an_async_task_that_blocks_its_loop_fails_and_says_to_use_a_def_task(
    cluster: Cluster, loop: str
) -> None:
    """``time.sleep`` in an ``async def`` task, past the worker's ``--block-limit``: the
    watchdog logs which task blocked which loop, and the run fails (not retried) with
    `aiki.BlockingTaskError` telling to use a plain ``def`` task."""
    async with cluster.client() as client:
        handle = await flows.blocking_flow.start(client, flows.Block(loop=loop, seconds=2.5))
        result = await handle.wait_for_status("completed")
        task = f"blocking_on_{loop}"
        assert result.status == "failed"
        assert result.error is not None
        assert f"task {task!r} blocked" in result.error.message
        assert "use a plain def task for blocking code" in result.error.message
        assert "loop_flows.py" in result.error.message, "names where it blocked"
        details = await client.describe_run(handle.run_id)
    [attempt] = [t for t in details.tasks if t.name == task]
    assert attempt.error is not None
    assert attempt.error.code == "blocking_task"
    logs = "".join(path.read_text() for path in cluster.logs.glob("worker-*.log"))
    assert f"the {loop} event loop has been blocked" in logs
    assert f"by task {task!r} of run {handle.run_id}" in logs
