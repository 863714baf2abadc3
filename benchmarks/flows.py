"""The benchmark workloads: W1 (one task) and W5 (five sequential tasks)."""

from __future__ import annotations

import aiki


@aiki.task
async def work(x: int) -> int:
    return x + 1


w1 = aiki.workflow("bench-w1")
w5 = aiki.workflow("bench-w5")


@w1.version("1")
async def one_task(run: aiki.Run[int], x: int) -> int:
    return await work.start(run, x)


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
