"""Durable waits and run control end to end: real server and worker processes, PG, Redis."""

from __future__ import annotations

import psycopg
import pytest
import trio

import aiki
from tests._deadline import deadline
from tests._waiting import wait_until

from . import waits_flows as flows
from .conftest import ONE_SERVER, THREE_SERVERS, Cluster
from .waits_flows import Item, Knock

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"
TOPOLOGIES = (ONE_SERVER, THREE_SERVERS)
SERVER_ARGS = ["--stall-after", "3", "--timer-scan", "1"]


def _query(cluster: Cluster, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def _q(
    cluster: Cluster, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return await trio.to_thread.run_sync(_query, cluster, sql, params)


async def _effects(cluster: Cluster, key: str, task: str) -> int:
    rows = await _q(cluster, "SELECT count(*) FROM e2e_effects WHERE key = %s AND task = %s",
                    (key, task))  # fmt: skip
    return int(rows[0][0])


async def _history(cluster: Cluster, run_id: str) -> list[tuple[object, ...]]:
    return await _q(cluster, "SELECT from_status, to_status, reason FROM aiki_transitions"
                             " WHERE run_id = %s ORDER BY id", (run_id,))  # fmt: skip


@deadline(60)
async def test_a_sleeping_run_holds_no_worker_slot_then_wakes_and_continues(
    cluster: Cluster,
) -> None:
    """A one-slot worker: while run A sleeps 2 s (suspended, unclaimed), run B completes."""
    worker, _ = await trio.to_thread.run_sync(
        cluster.start_worker, "tests.e2e.waits_flows:one_slot_worker"
    )
    try:
        async with cluster.client() as client:
            sleeping = await flows.slot_sleeper.start(client, 2.0)
            assert (await sleeping.wait_for_status("sleeping")).success
            [(status, holder)] = await _q(
                cluster, "SELECT status, worker_id FROM aiki_runs WHERE id = %s",
                (sleeping.run_id,),
            )  # fmt: skip
            assert (status, holder) == ("sleeping", None), "no claim held while sleeping"
            other = await flows.slot_quick_flow.start(client, 21)
            done = await other.wait_for_status("completed")
            assert (done.success, done.output) == (True, 42)
            assert (await sleeping.refresh()).status == "sleeping", "B ran while A slept"
            woke = await sleeping.wait_for_status("completed")
        assert (woke.success, woke.output) == (True, "slept")
        assert [row[1] for row in await _history(cluster, sleeping.run_id)] == [
            "queued",
            "running",
            "sleeping",
            "queued",
            "running",
            "completed",
        ]
    finally:
        worker.stop()


@deadline(60)
async def test_wakeup_ends_a_long_sleep_early(cluster: Cluster) -> None:
    """An hour-long sleep ends at once on wakeup() and reports that it was cut short."""
    async with cluster.client() as client:
        handle = await flows.sleeper.start(client, 3600.0)
        assert (await handle.wait_for_status("sleeping")).success
        woken = await handle.wakeup()
        assert woken.sleeps == 1
        result = await handle.wait_for_status("completed")
    assert (result.success, result.output) == (True, "cut short")


@deadline(90)
async def test_a_sleep_survives_a_server_restart(cluster: Cluster) -> None:
    """The server is killed while a run sleeps; a new server finds the deadline and wakes it."""
    async with cluster.client() as client:
        handle = await flows.sleeper.start(client, 3.0)
        assert (await handle.wait_for_status("sleeping")).success
    await trio.to_thread.run_sync(cluster.restart_server)
    async with cluster.client() as client:
        result = await client.handle(handle.run_id).wait_for_status("completed")
    assert (result.success, result.output) == (True, "slept")

    def reconnected() -> bool:  # (logged at a worker's default level, as the loss was)
        logs = [worker.log.read_text(errors="replace") for worker in cluster.workers]
        cut_off = [log for log in logs if "session with" in log]
        if len(cluster.servers) == 1 and not cut_off:
            return False  # (with three servers, the workers may have been on others)
        return all("reconnected to" in log for log in cut_off)

    with trio.fail_after(30):
        await wait_until(lambda: trio.to_thread.run_sync(reconnected), interval=0.1)


@deadline(60)
async def test_events_before_and_after_the_wait_duplicates_and_timeout(cluster: Cluster) -> None:
    """Events sent before the run waits are kept in order; a repeated reference ID is
    ignored, even once the run ended (webhooks retry), while a new event to an ended run
    is refused; a wait with a timeout and no event times out."""
    async with cluster.client() as client:
        delayed = flows.collect.with_(trigger=aiki.trigger.after(seconds=1))
        handle = await delayed.start(client, 3)
        assert (await handle.refresh()).status == "scheduled"
        first = await handle.events.item.send(Item("a"), reference_id="psp-1")
        again = await handle.events.item.send(Item("a"), reference_id="psp-1")
        assert (first.duplicate, again.duplicate, again.seq) == (False, True, first.seq)
        await handle.events.item.send(Item("b"))
        assert (await handle.wait_for_status("awaiting_event")).success
        await handle.events.item.send(Item("c"))
        result = await handle.wait_for_status("completed")
        late = await handle.events.item.send(Item("a"), reference_id="psp-1")
        assert (late.duplicate, late.seq) == (True, first.seq)
        with pytest.raises(aiki.InvalidTransitionError, match="completed; it takes no more"):
            await handle.events.item.send(Item("d"), reference_id="psp-2")
    assert (result.success, result.output) == (True, ["a", "b", "c", "timed out"])
    history = await _history(cluster, handle.run_id)
    assert history[0][1] == "scheduled"
    assert ("scheduled", "queued", "triggered") in history


@deadline(30)
async def test_event_payloads_are_validated_on_send(cluster: Cluster) -> None:
    """A payload that does not fit is refused by the SDK and, sent raw, by the server."""
    async with cluster.client() as client:
        handle = await flows.collect.start(client, 1)
        with pytest.raises(aiki.ValidationError):
            await handle.events.item.send({"nom": "x"})
        with pytest.raises(aiki.ValidationError) as caught:
            await client.send_event(handle.run_id, "item", {"name": 5})
        assert caught.value.errors == ("5 is not of type 'string' @ $.name",)
        with pytest.raises(aiki.ValidationError, match="declares no event 'nope'") as undeclared:
            await client.send_event(handle.run_id, "nope", None)
        assert undeclared.value.errors == ("undeclared event 'nope' @ $.name",)
        await handle.cancel()


@deadline(90)
async def test_a_parent_waits_for_three_children_and_sees_a_child_failure_as_a_result(
    cluster: Cluster,
) -> None:
    """Three children started concurrently; the failing one is a typed result, not a crash."""
    async with cluster.client() as client:
        handle = await flows.parent_flow.start(client, [1, -2, 3])
        result = await handle.wait_for_status("completed")
    assert (result.success, result.output) == (True, ["ok 2", "failed: negative input -2", "ok 6"])
    children = await _q(cluster, "SELECT status FROM aiki_runs WHERE parent_id = %s ORDER BY "
                                 "child_address", (handle.run_id,))  # fmt: skip
    assert sorted(row[0] for row in children) == ["completed", "completed", "failed"]


@deadline(60)
async def test_a_child_of_a_version_no_worker_serves_is_an_error_the_parent_can_catch(
    cluster: Cluster,
) -> None:
    """Starting a child of an unregistered version raises `aiki.WorkflowNotFoundError` in
    the handler: caught, the parent goes on; uncaught, it fails the parent at once (never a
    parent re-run every claim timeout)."""
    async with cluster.client() as client:
        caught = await flows.adopting_flow.start(client, True)
        uncaught = await flows.adopting_flow.start(client, False)
        done = await caught.wait_for_status("completed")
        failed = await uncaught.wait_for_status("completed")
    assert done.success
    assert done.output is not None
    assert done.output.startswith("caught: workflow 'w-unserved' version '1' is not registered")
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "workflow_not_found"
    for run_id in (caught.run_id, uncaught.run_id):
        statuses = [row[1] for row in await _history(cluster, run_id)]
        assert statuses.count("running") == 1, f"executed once, not taken back: {statuses}"


@deadline(60)
async def test_cancelling_a_parent_cancels_its_children_and_grandchildren(cluster: Cluster) -> None:
    """Cancel cascades through every non-terminal descendant, and each is recorded."""
    async with cluster.client() as client:
        handle = await flows.nesting_flow.start(client, 2)

        async def grandchild_sleeping() -> bool:
            rows = await _q(cluster, """
                SELECT g.status FROM aiki_runs c JOIN aiki_runs g ON g.parent_id = c.id
                WHERE c.parent_id = %s""", (handle.run_id,))  # fmt: skip
            return rows == [("sleeping",)]

        await wait_until(grandchild_sleeping)
        stopped = await handle.cancel(reason="order withdrawn")
        assert len(stopped.affected) == 3
        result = await handle.wait_for_status("completed")
    assert result.status == "cancelled"
    tree = await _q(cluster, """
        WITH RECURSIVE t AS (
            SELECT id, status, stop_reason FROM aiki_runs WHERE id = %s
            UNION ALL
            SELECT r.id, r.status, r.stop_reason FROM aiki_runs r JOIN t ON r.parent_id = t.id)
        SELECT status, stop_reason FROM t""", (handle.run_id,))  # fmt: skip
    by = f"by key {cluster.keys['client'].split('_')[1]} (test client)"  # who, as recorded
    assert tree == [("cancelled", f"order withdrawn, {by}")] * 3


@deadline(90)
async def test_pause_stops_a_running_run_and_resume_continues_it(cluster: Cluster) -> None:
    """Pausing mid-task stops the run (pushed to its worker); resuming runs it on from its
    history: the interrupted task runs again, and the run completes."""
    async with cluster.client() as client:
        handle = await flows.controlled_flow.start(client, "pausable")

        async def first_attempt_started() -> bool:
            return await _effects(cluster, handle.run_id, "qts") == 1

        await wait_until(first_attempt_started)
        paused = await handle.pause()
        assert paused.status == "paused"
        assert (await handle.refresh()).status == "paused"
        await handle.resume()
        result = await handle.wait_for_status("completed")
    assert (result.success, result.output) == (True, "done on attempt 2")
    statuses = [row[1] for row in await _history(cluster, handle.run_id)]
    assert statuses == ["queued", "running", "paused", "queued", "running", "completed"]


@deadline(60)
async def test_cancelling_a_run_stops_its_task_body_promptly(cluster: Cluster) -> None:
    """The worker is told at once (server push): the task body is cancelled, not left running."""
    async with cluster.client() as client:
        handle = await flows.controlled_flow.start(client, "long")

        async def started() -> bool:
            return await _effects(cluster, handle.run_id, "long started") == 1

        await wait_until(started)
        await handle.cancel()

        async def body_cancelled() -> bool:
            return await _effects(cluster, handle.run_id, "long cancelled") == 1

        with trio.fail_after(5):  # far below the body's 60 s
            await wait_until(body_cancelled)
        assert (await handle.refresh()).status == "cancelled"
    assert await _effects(cluster, handle.run_id, "long finished") == 0


@deadline(60)
async def test_a_task_timeout_fails_the_attempt_and_is_recorded(cluster: Cluster) -> None:
    """An attempt past timeout_seconds is cancelled and recorded as a TaskTimeoutError."""
    async with cluster.client() as client:
        handle = await flows.task_timeout_flow.start(client, "slow-1")
        result = await handle.wait_for_status("completed")
    assert (result.success, result.status) == (False, "failed")
    assert result.error is not None
    assert result.error.cause is not None
    assert (result.error.cause.type, result.error.cause.code) == (
        "aiki.errors.TaskTimeoutError",
        "task_timeout",
    )
    [(state, error_type)] = await _q(
        cluster, "SELECT state, error->>'type' FROM aiki_tasks WHERE run_id = %s", (handle.run_id,)
    )
    assert (state, error_type) == ("failed", "aiki.errors.TaskTimeoutError")


@deadline(60)
async def test_a_run_timeout_fails_the_run_and_is_recorded(cluster: Cluster) -> None:
    """A run that has not ended within its timeout is failed by the server's timers."""
    async with cluster.client() as client:
        handle = await flows.timing_out_flow.start(client)
        result = await handle.wait_for_status("completed")
    assert (result.success, result.status) == (False, "failed")
    assert result.error is not None
    assert result.error.code == "run_timeout"
    assert ("sleeping", "failed", "run timeout") in await _history(cluster, handle.run_id)


@deadline(60)
async def test_an_undelivered_run_becomes_stalled_and_requeue_brings_it_back(
    cluster: Cluster,
) -> None:
    """A queued run no worker takes goes stalled after the cap; requeue queues it again."""
    orphan = aiki.workflow("w-quick").version("orphan")(flows.quick_flow.handler)
    async with cluster.client() as client, cluster.client(role="worker") as registrar:
        await registrar.call(_register_orphan())
        handle = await orphan.start(client, 1)
        stalled = await handle.wait_for_status("stalled")
        assert stalled.success
        requeued = await client.requeue(handle.run_id, reason="operator")
        assert requeued.status == "queued"
    statuses = [row[1] for row in await _history(cluster, handle.run_id)]
    assert statuses == ["queued", "stalled", "queued"]


def _register_orphan() -> object:
    from aiki.protocol import RegisterWorker, VersionSpec

    return RegisterWorker(
        worker_id="orphan-registrar",
        versions=(VersionSpec(workflow="w-quick", version="orphan"),),
    )


@deadline(120)
async def test_concurrent_branches_suspend_together_resume_on_any_wait_and_replay_the_same(
    cluster: Cluster,
) -> None:
    """A nursery of tasks, two events, a timer and a child: the tasks overlap, the run
    suspends when every branch waits, resumes on each satisfied wait, and the final result
    holds the values of the first executions."""
    async with cluster.client() as client:
        handle = await flows.concurrent_flow.start(client, 7)
        assert (await handle.wait_for_status("awaiting_event")).success
        await handle.events.a.send(Knock("alice"))
        await handle.events.b.send(Knock("bob"))
        result = await handle.wait_for_status("completed")
    assert result.success
    output = result.output
    assert output is not None
    assert (output["a"], output["b"], output["child"], output["slept"]) == (
        "alice",
        "bob",
        14,
        False,
    )
    starts = sorted(float(output[f"step{i}"]) for i in range(3))  # type: ignore[arg-type]
    assert starts[-1] - starts[0] < 0.9, "the three tasks ran concurrently (each takes 1 s)"
    statuses = [row[1] for row in await _history(cluster, handle.run_id)]
    assert statuses.count("awaiting_event") >= 1
    assert statuses[-1] == "completed"
    tasks = await _q(cluster, "SELECT count(*) FROM aiki_tasks WHERE run_id = %s", (handle.run_id,))
    assert tasks == [(3,)], "each task ran once, whatever the number of replays"
    children = await _q(cluster, "SELECT count(*) FROM aiki_runs WHERE parent_id = %s",
                        (handle.run_id,))  # fmt: skip
    assert children == [(1,)], "the child was started once, whatever the number of replays"


def test_every_recorded_transition_is_one_the_state_machine_allows(cluster: Cluster) -> None:
    """Across everything this module ran, the history holds only transitions the
    lifecycle's table allows, and runs start in an initial status."""
    from aiki.server.lifecycle import every_move

    pairs = _query(cluster, "SELECT DISTINCT from_status, to_status FROM aiki_transitions")
    assert len(pairs) > 15, pairs
    bad = [(before, after) for before, after in pairs if (before, after) not in every_move()]
    assert bad == []
