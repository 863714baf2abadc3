"""Workflows with the mistakes a new user makes: steps not awaited, a task returning a
value of another type than it declares."""

from __future__ import annotations

import aiki


@aiki.task
async def listing(n: int) -> list[str]:
    return [str(x) for x in range(n)]


@aiki.task
async def listing_a_set(n: int) -> list[str]:
    return {str(x) for x in range(n)}  # type: ignore[return-value]  # the mistake


forgot_sleep = aiki.workflow("w-mistake-sleep")
forgot_task = aiki.workflow("w-mistake-task")
wrong_type = aiki.workflow("w-mistake-type")


@forgot_sleep.version("1")
async def forgot_sleep_flow(run: aiki.Run[None]) -> str:
    run.sleep("nap", seconds=30)  # type: ignore[unused-coroutine]  # the mistake: no await
    return "did not sleep"


@forgot_task.version("1")
async def forgot_task_flow(run: aiki.Run[int], n: int) -> list[str]:
    return listing.start(run, n)  # type: ignore[return-value]  # the mistake: no await


@wrong_type.version("1")
async def wrong_type_flow(run: aiki.Run[int], n: int) -> list[str]:
    return await listing_a_set.start(run, n)


mistakes_worker = aiki.Worker(forgot_sleep_flow, forgot_task_flow, wrong_type_flow)
