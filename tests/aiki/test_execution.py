"""The execution rim with a real server and a real worker in this process: the run is
suspended only once every branch is parked (branches still unwinding after a
cancellation hold it), on waits that can wake it; and the worker's scheduler runs tasks
in creation order."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import trio

import aiki
from aiki.sdk import deterministic_scheduling
from aiki.worker import WorkerConfig, run_worker
from tests._deadline import deadline
from tests.aiki.server.conftest import Api, open_api

UNWIND_ROUNDS = 200
"""Scheduler rounds a branch takes before it cancels the other, and the other to unwind
(far more than any fixed number of rounds a worker could wait)."""

unwinding = aiki.workflow(f"unwinding-{uuid.uuid4().hex[:8]}")


@unwinding.version("1", events={"complete": aiki.event(str)})
async def slow_unwind(run: aiki.Run[int], months: int) -> list[str]:
    """Each month, thirty (milli)seconds against an event; the winning branch takes many
    scheduler rounds before it cancels the other, which takes as many to unwind."""
    outcomes = []
    for _ in range(months):
        outcome = ""
        async with trio.open_nursery() as nursery:

            async def sleep(scope: trio.CancelScope = nursery.cancel_scope) -> None:
                nonlocal outcome
                await run.sleep("thirty-days", seconds=0.05)
                for _ in range(UNWIND_ROUNDS):
                    await trio.lowlevel.checkpoint()
                outcome = outcome or "slept"
                scope.cancel()

            async def wait(scope: trio.CancelScope = nursery.cancel_scope) -> None:
                nonlocal outcome
                try:
                    completed = await run.events.complete.wait()
                    outcome = outcome or f"event {completed}"
                    scope.cancel()
                finally:
                    with trio.move_on_after(10, shield=True):
                        for _ in range(UNWIND_ROUNDS):
                            await trio.lowlevel.checkpoint()

            nursery.start_soon(wait)
            nursery.start_soon(sleep)
        outcomes.append(outcome)
    return outcomes


deadlines = aiki.workflow(f"deadlines-{uuid.uuid4().hex[:8]}")


@aiki.task(loop="trio")
async def slow(key: str) -> str:
    await trio.sleep(0.3)
    return key


@deadlines.version("1", events={"go": aiki.event(str)})
async def deadline_around_a_wait(run: aiki.Run[int], rounds: int) -> list[str]:
    """Each round: a slow task beside a trio deadline around an event wait (the deadline
    gives the wait up while the task runs), then a durable sleep: every round is replayed
    by the executions after it."""
    seen: list[str] = []
    for round_ in range(rounds):
        got = "gave up"
        async with trio.open_nursery() as nursery:

            async def work(key: str = str(round_)) -> None:
                seen.append(await slow.start(run, key))

            nursery.start_soon(work)
            with trio.move_on_after(0.05):
                got = await run.events.go.wait()
            seen.append(got)  # before the task's result, when the deadline gives up first
        await run.sleep("between", seconds=0.05)
    return seen


drifting = aiki.workflow(f"drifting-{uuid.uuid4().hex[:8]}")
CODE = {"changed": False}
"""Flipped by a test while a run is suspended: the handler's code changed under it."""
RAN: list[str] = []


@aiki.task(loop="trio")
async def note(key: str) -> str:
    RAN.append(key)
    return key


@drifting.version("1")
async def drifting_branches(run: aiki.Run[int], count: int) -> int:
    """Branches each call a task, then the run sleeps; once the code "changed", branch 1
    calls it with another input."""

    async def one(index: int) -> None:
        changed = CODE["changed"] and index == 1
        await note.start(run, f"{index}-changed" if changed else str(index))

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    await run.sleep("nap", seconds=0.2)
    return count


@asynccontextmanager
async def _serving(pg_url: str, redis_url: str) -> AsyncIterator[Api]:
    """A server and a worker of the workflows above, in this process."""
    stop = trio.Event()
    async with open_api(pg_url, redis_url) as api, trio.open_nursery() as nursery:
        config = WorkerConfig(server_url=api.url, redis_url=redis_url,
                              api_key=api.keys["worker"], heartbeat_seconds=0.5)  # fmt: skip
        await nursery.start(functools.partial(
            run_worker, aiki.Worker(slow_unwind, deadline_around_a_wait, drifting_branches),
            config,
            shutdown_trigger=stop.wait,
        ))  # fmt: skip
        yield api
        stop.set()


def _state(pg_url: str, run_id: str) -> tuple[str, bool]:
    """The run's status, and whether it has a pending wait (read in one snapshot)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, EXISTS (SELECT 1 FROM aiki_waits w WHERE w.run_id = r.id"
            " AND w.state = 'pending') FROM aiki_runs r WHERE id = %s", (run_id,),
        ).fetchone()  # fmt: skip
    assert row is not None
    return str(row[0]), bool(row[1])


@deadline(60)
async def test_a_run_is_suspended_only_once_cancelled_branches_unwound_and_on_live_waits(
    pg_url: str, redis_url: str
) -> None:
    """Six months of a sleep racing an event, the winner taking 200 scheduler rounds to
    cancel the loser and the loser as many to unwind: every time the run is seen
    suspended it has a pending wait that can wake it, it never stalls (it completes),
    and each month's event wait is withdrawn."""
    months = 6
    async with (
        _serving(pg_url, redis_url) as api,
        aiki.Client(api.url, api_key=api.keys["client"]) as client,
    ):
        handle = await slow_unwind.start(client, months)
        suspended_seen = 0
        while True:
            status, pending = await trio.to_thread.run_sync(_state, pg_url, handle.run_id)
            if status in ("completed", "failed", "cancelled"):
                break
            if status in ("sleeping", "awaiting_event", "awaiting_child_workflow"):
                suspended_seen += 1
                assert pending, f"suspended ({status}) with no pending wait"
            await trio.sleep(0.002)
        result = await handle.wait_for_status("completed")
    assert result.output == ["slept"] * months
    assert suspended_seen > 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        waits = conn.execute("SELECT kind, state, count(*) FROM aiki_waits WHERE run_id = %s"
                             " GROUP BY kind, state", (handle.run_id,)).fetchall()  # fmt: skip
    assert sorted(waits) == [("event", "withdrawn", months), ("sleep", "completed", months)]


@deadline(60)
async def test_a_trio_deadline_around_a_durable_wait_replays_to_the_same_decision(
    pg_url: str, redis_url: str
) -> None:
    """The deadline gave the wait up in the first execution; each replay waits for it to
    do so again (no divergence, no event wait left pending), and the run completes with
    what the first executions decided."""
    rounds = 3
    async with (
        _serving(pg_url, redis_url) as api,
        aiki.Client(api.url, api_key=api.keys["client"]) as client,
    ):
        handle = await deadline_around_a_wait.start(client, rounds)
        result = await handle.wait_for_status("completed")
    assert result.success, result.error
    assert result.output == [item for r in range(rounds) for item in ("gave up", str(r))]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        waits = conn.execute("SELECT kind, state, count(*) FROM aiki_waits WHERE run_id = %s"
                             " GROUP BY kind, state", (handle.run_id,)).fetchall()  # fmt: skip
        claims = conn.execute(
            "SELECT count(*) FROM aiki_transitions WHERE run_id = %s AND to_status = 'running'",
            (handle.run_id,),
        ).fetchone()
    assert sorted(waits) == [("event", "withdrawn", rounds), ("sleep", "completed", rounds)]
    assert claims is not None
    assert claims[0] >= rounds, "each round was replayed in a later execution"


@deadline(60)
async def test_a_branch_that_diverges_fails_the_run_with_the_divergence_itself(
    pg_url: str, redis_url: str
) -> None:
    """A branch's recorded call changed while the run slept: the run fails with
    `NonDeterminismError` itself (its code, the step, the recorded entries it did not
    reach), not a nursery's exception group, and the changed call never ran."""
    CODE["changed"] = False
    async with (
        _serving(pg_url, redis_url) as api,
        aiki.Client(api.url, api_key=api.keys["client"]) as client,
    ):
        handle = await drifting_branches.start(client, 4)
        assert (await handle.wait_for_status("sleeping")).success
        CODE["changed"] = True
        result = await handle.wait_for_status("failed")
    CODE["changed"] = False
    assert result.success
    error = result.error
    assert error is not None
    assert (error.code, error.type) == ("non_determinism", "aiki.errors.NonDeterminismError")
    assert "task:note:" in error.message
    assert "recorded steps were not replayed" in error.message
    assert "1-changed" not in RAN, "the changed call never ran"


async def test_the_workers_scheduler_runs_tasks_in_the_order_they_were_created() -> None:
    """Under `deterministic_scheduling`, tasks that become runnable together run oldest
    first, every time (trio on its own runs each batch in a random order); leaving it
    restores trio's own scheduling."""
    import trio._core._run as trio_run

    before = trio_run._r
    order: list[int] = []

    async def one(index: int) -> None:
        await trio.lowlevel.checkpoint()
        order.append(index)

    for _ in range(20):
        order.clear()
        with deterministic_scheduling():
            async with trio.open_nursery() as nursery:
                for index in range(30):
                    nursery.start_soon(one, index)
        assert order == list(range(30))
    assert trio_run._r is before
