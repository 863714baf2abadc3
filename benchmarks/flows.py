"""The benchmark workloads: W1 (one task), W5 (five sequential tasks), fan-out (one parent,
many children), event round trip, sleepers."""

from __future__ import annotations

import attrs
import trio

import aiki


@aiki.task
async def work(x: int) -> int:
    """On the worker's asyncio loop (the default for ``async def`` tasks)."""
    return x + 1


@aiki.task(loop="trio")
async def work_on_trio(x: int) -> int:
    """On the worker's trio loop (no hop to the asyncio thread)."""
    return x + 1


w1 = aiki.workflow("bench-w1")
w1_trio = aiki.workflow("bench-w1-trio")
w5 = aiki.workflow("bench-w5")


@w1.version("1")
async def one_task(run: aiki.Run[int], x: int) -> int:
    return await work.start(run, x)


@w1_trio.version("1")
async def one_trio_task(run: aiki.Run[int], x: int) -> int:
    return await work_on_trio.start(run, x)


@w5.version("1")
async def five_tasks(run: aiki.Run[int], x: int) -> int:
    for _ in range(5):
        x = await work.start(run, x)  # each input differs, so each call is its own task
    return x


worker = aiki.Worker(one_task, five_tasks, concurrency=32)


sleepy = aiki.workflow("bench-sleepy")


@sleepy.version("1")
async def sleeper(run: aiki.Run[float], seconds: float) -> bool:
    return await run.sleep("nap", seconds=seconds)


sleeper_worker = aiki.Worker(one_task, five_tasks, sleeper, concurrency=32)


backlog = aiki.workflow("bench-backlog")


@backlog.version("1")
async def queued(run: aiki.Run[int], x: int) -> int:
    """Registered once (`backlog_worker`), then served by nobody: its runs stay queued."""
    return x


backlog_worker = aiki.Worker(queued, concurrency=1)


leaf = aiki.workflow("bench-leaf")
fan = aiki.workflow("bench-fan-out")


@leaf.version("1")
async def leaf_flow(run: aiki.Run[int], x: int) -> int:
    return await work.start(run, x)


@fan.version("1")
async def fan_out(run: aiki.Run[int], width: int) -> int:
    """One parent, ``width`` children (one task each), waited for concurrently."""
    children = [await leaf_flow.start_as_child(run, x) for x in range(width)]
    outputs: list[int] = []

    async def wait(child: aiki.ChildRun[int]) -> None:
        result = await child.wait_for_status("completed")
        outputs.append(result.output or 0)

    async with trio.open_nursery() as nursery:
        for child in children:
            nursery.start_soon(wait, child)
    return sum(outputs)


@attrs.frozen
class Go:
    sent_at: float


ping = aiki.workflow("bench-event")


@ping.version("1", events={"go": aiki.event(Go)})
async def event_round_trip(run: aiki.Run[float], x: int) -> float:
    """Waits for one event and completes with the moment it was sent."""
    go = await run.events.go.wait()
    return go.sent_at


suite_worker = aiki.Worker(
    one_task, one_trio_task, five_tasks, leaf_flow, fan_out, event_round_trip, concurrency=32
)


@attrs.frozen
class Keyed:
    key: int
    x: int


PER_KEY = aiki.ConcurrencyLimit(name="bench-per-key", key="key", per_key=2)
w1_limited = aiki.workflow("bench-w1-limited")


@w1_limited.version("1", limits=[PER_KEY])
async def one_task_limited(run: aiki.Run[int], job: Keyed) -> int:
    """W1 under a concurrency limit per key (at most 2 runs of one key at once)."""
    return await work.start(run, job.x)


flow_worker = aiki.Worker(one_task, one_task_limited, concurrency=32)
