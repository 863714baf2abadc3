"""Workflows for the schedule end-to-end tests (served by real worker processes)."""

from __future__ import annotations

import attrs
import trio

import aiki

from .flows import record_effect


@aiki.task
async def triple(x: int) -> int:
    return 3 * x


@attrs.frozen
class Hold:
    key: str
    seconds: float


@aiki.task(loop="trio")
async def hold(job: Hold) -> str:
    """Busy for ``job.seconds`` (records its start, and its cancellation if stopped)."""
    key = job.key
    record_effect(key, "hold started")
    try:
        await trio.sleep(job.seconds)
    except trio.Cancelled:
        record_effect(key, "hold cancelled")
        raise
    return "held"


ticking = aiki.workflow("s-tick")
busy = aiki.workflow("s-busy")
stamping = aiki.workflow("s-stamp")


@ticking.version("1")
async def tick(run: aiki.Run[int], x: int) -> int:
    return await triple.start(run, x)


@stamping.version("1")
async def stamped(run: aiki.Run[int], x: int) -> str:
    """Says which occurrence of its schedule it is for."""
    occurrence = run.occurrence.isoformat() if run.occurrence else "no schedule"
    return f"{await triple.start(run, x)} at {occurrence}"


@busy.version("1")
async def busy_flow(run: aiki.Run[float], seconds: float) -> str:
    """Long-running: a task that takes ``seconds``."""
    return await hold.start(run, Hold(run.id, seconds))


schedule_worker = aiki.Worker(tick, stamped, busy_flow, concurrency=8)
