"""The chaos suite: thousands of workflows while every kind of process dies under them.

One PostgreSQL, one Redis, one server and three workers, all real processes with short
recovery timeouts; and a variant with three servers on a 3-master Redis Cluster (queues
in four sub-streams), where a server is killed while workers are connected to it and a
Redis node comes back without its data. While the load runs, faults are injected one
after the other; then every invariant is checked against what PostgreSQL recorded, and
the report printed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from tests._deadline import deadline

from .harness import Chaos

RUNS = 1200
PER_SECOND = 40.0
FAULT_SPACING_SECONDS = 4.0
SETTLE_SECONDS = 180.0
DEADLINE_SECONDS = 480.0
"""Load (~30 s), faults, settling (at most `SETTLE_SECONDS`), checks and teardown: a hang
anywhere fails the test instead of stalling the suite."""


@deadline(DEADLINE_SECONDS)
async def test_every_run_survives_the_faults(capsys: pytest.CaptureFixture[str]) -> None:
    """No run is lost or completed twice, and no recorded task runs again, while workers,
    the server, Redis and PostgreSQL are killed and restarted under load."""
    chaos = await trio.to_thread.run_sync(Chaos.start)
    await _survive(chaos, RUNS, capsys, lambda: [
        chaos.kill_worker_mid_task,
        chaos.freeze_worker,
        chaos.restart_redis,
        chaos.restart_server,
        chaos.restart_postgres,
        chaos.kill_worker_mid_task,
        chaos.restart_server,
    ])  # fmt: skip


@deadline(DEADLINE_SECONDS)
async def test_every_run_survives_the_faults_on_three_servers_and_a_redis_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same invariants with three servers (clients and workers given all three) on a
    Redis Cluster: servers killed under the workers connected to them, Redis nodes back
    without their data; half the runs under concurrency limits (per group and over all)
    with priorities, which no run may exceed at any moment."""
    chaos = await trio.to_thread.run_sync(
        lambda: Chaos.start(seed=11, servers=3, redis_cluster=True, limited=True)
    )
    await _survive(chaos, 500, capsys, lambda: [
        chaos.restart_server,
        chaos.restart_redis,
        chaos.kill_worker_mid_task,
        chaos.restart_server,
    ])  # fmt: skip


async def _survive(
    chaos: Chaos,
    runs: int,
    capsys: pytest.CaptureFixture[str],
    faults: Callable[[], list[Callable[[], None]]],
) -> None:
    """Start ``runs`` runs while the faults are injected, settle, check, report."""
    try:
        schedule = faults()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.load, runs, PER_SECOND)
            for fault in schedule:
                # Spacing, not settling: each fault lands while the load is still running.
                await trio.sleep(FAULT_SPACING_SECONDS)
                await trio.to_thread.run_sync(fault)
        still_open = await chaos.wait_until_settled(SETTLE_SECONDS)
        report = await trio.to_thread.run_sync(chaos.check)
        with capsys.disabled():
            print("\nchaos report:\n  " + "\n  ".join(report.lines()))
        assert still_open == 0, f"{still_open} runs still open after {SETTLE_SECONDS:g} s"
        assert report.runs == runs
        assert len(report.faults) == len(schedule)
        assert report.limited == (runs + 1) // 2 if chaos.limited else report.limited == 0
        assert report.clean, report
    finally:
        with trio.move_on_after(60, shield=True):
            await trio.to_thread.run_sync(chaos.stop)
