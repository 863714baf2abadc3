"""The chaos suite: thousands of workflows while every kind of process dies under them.

One PostgreSQL, one Redis, one server and three workers, all real processes with short
recovery timeouts. While the load runs, faults are injected one after the other; then
every invariant is checked against what PostgreSQL recorded, and the report printed.
"""

from __future__ import annotations

import pytest
import trio

from tests._deadline import deadline

from .harness import Chaos

RUNS = 1500
PER_SECOND = 40.0
FAULT_SPACING_SECONDS = 4.0
SETTLE_SECONDS = 180.0
DEADLINE_SECONDS = 480.0
"""Load (~40 s), faults, settling (at most `SETTLE_SECONDS`), checks and teardown: a hang
anywhere fails the test instead of stalling the suite."""


@deadline(DEADLINE_SECONDS)
async def test_every_run_survives_the_faults(capsys: pytest.CaptureFixture[str]) -> None:
    """No run is lost or completed twice, and no recorded task runs again, while workers,
    the server, Redis and PostgreSQL are killed and restarted under load."""
    chaos = await trio.to_thread.run_sync(Chaos.start)
    try:
        schedule = [
            chaos.kill_worker_mid_task,
            chaos.freeze_worker,
            chaos.restart_redis,
            chaos.restart_server,
            chaos.restart_postgres,
            chaos.kill_worker_mid_task,
            chaos.restart_server,
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.load, RUNS, PER_SECOND)
            for fault in schedule:
                # Spacing, not settling: each fault lands while the load is still running.
                await trio.sleep(FAULT_SPACING_SECONDS)
                await trio.to_thread.run_sync(fault)
        still_open = await chaos.wait_until_settled(SETTLE_SECONDS)
        report = await trio.to_thread.run_sync(chaos.check)
        with capsys.disabled():
            print("\nchaos report:\n  " + "\n  ".join(report.lines()))
        assert still_open == 0, f"{still_open} runs still open after {SETTLE_SECONDS:g} s"
        assert report.runs == RUNS
        assert len(report.faults) == len(schedule)
        assert report.clean, report
    finally:
        with trio.move_on_after(60, shield=True):
            await trio.to_thread.run_sync(chaos.stop)
