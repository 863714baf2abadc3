"""Workflows for the durable-waits end-to-end tests (served by real worker processes)."""

from __future__ import annotations

import asyncio
import time

import attrs
import trio

import aiki

from .flows import record_effect


@attrs.frozen
class Item:
    name: str


@attrs.frozen
class Knock:
    by: str


@aiki.task
async def double(x: int) -> int:
    return 2 * x


@aiki.task(loop="trio")
async def timed_step(key: str) -> float:
    """Sleeps a second; returns when it started (to show tasks overlap)."""
    started = time.time()
    await trio.sleep(1.0)
    return started


@aiki.task(loop="trio")
async def long_task(key: str) -> str:
    """Runs until cancelled (records start and cancellation), or 60 s."""
    record_effect(key, "long started")
    try:
        await trio.sleep(60)
    except trio.Cancelled:
        record_effect(key, "long cancelled")
        raise
    record_effect(key, "long finished")
    return "finished"


@aiki.task(loop="trio")
async def quick_then_slow(key: str) -> str:
    """First attempt takes long (pausing interrupts it); later attempts are quick."""
    attempt = record_effect(key, "qts")
    if attempt == 1:
        await trio.sleep(60)
    return f"done on attempt {attempt}"


@aiki.task(timeout_seconds=0.5)
async def too_slow(key: str) -> str:
    """Written for asyncio: the task timeout reaches it on the worker's asyncio loop."""
    record_effect(key, "too_slow")
    await asyncio.sleep(5)
    return "never"


sleepy = aiki.workflow("w-sleepy")
quick = aiki.workflow("w-quick")
collecting = aiki.workflow("w-collecting")
parenting = aiki.workflow("w-parenting")
childish = aiki.workflow("w-child")
nesting = aiki.workflow("w-nesting")
controlled = aiki.workflow("w-controlled")
timing_out = aiki.workflow("w-timing-out")
task_timeout = aiki.workflow("w-task-timeout")
concurrent = aiki.workflow("w-concurrent")


@sleepy.version("1")
async def sleeper(run: aiki.Run[float], seconds: float) -> str:
    cut_short = await run.sleep("nap", seconds=seconds)
    return "cut short" if cut_short else "slept"


@quick.version("1")
async def quick_flow(run: aiki.Run[int], x: int) -> int:
    return await double.start(run, x)


@collecting.version("1", events={"item": aiki.event(Item), "done": aiki.event(None)})
async def collect(run: aiki.Run[int], count: int) -> list[str]:
    names = []
    for _ in range(count):
        item = await run.events.item.wait()
        names.append(item.name)
    done = await run.events.done.wait(timeout=1.0)
    return [*names, "timed out" if isinstance(done, aiki.TimedOut) else "done"]


@childish.version("1")
async def child_flow(run: aiki.Run[int], x: int) -> int:
    if x < 0:
        raise aiki.NonRetryableError(f"negative input {x}")
    await run.sleep("settle", seconds=0.2)
    return await double.start(run, x)


@parenting.version("1")
async def parent_flow(run: aiki.Run[list[int]], inputs: list[int]) -> list[str]:
    results: dict[int, str] = {}

    async def one(index: int, x: int) -> None:
        child = await child_flow.start_as_child(run, x)
        outcome = await child.wait_for_status("completed")
        if outcome.success:
            results[index] = f"ok {outcome.output}"
        else:
            results[index] = f"{outcome.status}: {outcome.error.message if outcome.error else '?'}"

    async with trio.open_nursery() as nursery:
        for index, x in enumerate(inputs):
            nursery.start_soon(one, index, x)
    return [results[index] for index in range(len(inputs))]


@nesting.version("1")
async def nesting_flow(run: aiki.Run[int], depth: int) -> str:
    if depth == 0:
        await run.sleep("forever", hours=1)
        return "woke"
    child = await nesting_flow.start_as_child(run, depth - 1)
    await child.wait_for_status("completed")
    return f"depth {depth} done"


@controlled.version("1")
async def controlled_flow(run: aiki.Run[str], mode: str) -> str:
    if mode == "long":
        return await long_task.start(run, run.id)
    return await quick_then_slow.start(run, run.id)


@timing_out.version("1", timeout_seconds=1.0)
async def timing_out_flow(run: aiki.Run[None]) -> str:
    await run.sleep("too long", hours=1)
    return "never"


@task_timeout.version("1")
async def task_timeout_flow(run: aiki.Run[str], key: str) -> str:
    return await too_slow.start(run, key)


@concurrent.version("1", events={"a": aiki.event(Knock), "b": aiki.event(Knock)})
async def concurrent_flow(run: aiki.Run[int], x: int) -> dict[str, object]:
    results: dict[str, object] = {}

    async def step_branch(index: int) -> None:
        results[f"step{index}"] = await timed_step.start(run, f"{run.id}-{index}")

    async def event_branch(name: str) -> None:
        knock = await getattr(run.events, name).wait()
        results[name] = knock.by

    async def timer_branch() -> None:
        results["slept"] = await run.sleep("nap", seconds=1.5)

    async def child_branch() -> None:
        child = await child_flow.start_as_child(run, x)
        results["child"] = (await child.wait_for_status("completed")).output

    async with trio.open_nursery() as nursery:
        for index in range(3):
            nursery.start_soon(step_branch, index)
        nursery.start_soon(event_branch, "a")
        nursery.start_soon(event_branch, "b")
        nursery.start_soon(timer_branch)
        nursery.start_soon(child_branch)
    return results


wide = aiki.workflow("w-wide")
leaf = aiki.workflow("w-leaf")


@leaf.version("1")
async def leaf_flow(run: aiki.Run[int], x: int) -> int:
    """A child that ends as fast as it can (one task)."""
    return await double.start(run, x)


@wide.version("1")
async def wide_flow(run: aiki.Run[int], width: int) -> int:
    """Starts ``width`` children, then waits for all of them at once."""
    children = [await leaf_flow.start_as_child(run, x) for x in range(1, width + 1)]
    total = 0

    async def wait(child: aiki.ChildRun[int]) -> None:
        nonlocal total
        result = await child.wait_for_status("completed")
        total += result.output or 0

    async with trio.open_nursery() as nursery:
        for child in children:
            nursery.start_soon(wait, child)
    return total


@aiki.task(loop="trio")
async def counting(steps: int) -> int:
    """Reports its progress at each step (from trio)."""
    for index in range(steps):
        aiki.progress({"done": index + 1, "of": steps})
        await trio.sleep(0.1)
    await trio.sleep(0.3)  # past the reporting interval: the last report goes out
    return steps


@aiki.task
def counting_in_a_thread(steps: int) -> int:
    """The same from a plain ``def`` task (its own thread)."""
    for index in range(steps):
        aiki.progress({"done": index + 1, "of": steps})
        time.sleep(0.1)
    time.sleep(0.3)
    return steps


progressing = aiki.workflow("w-progress")


@progressing.version("1")
async def progress_flow(run: aiki.Run[int], steps: int) -> int:
    return await counting.start(run, steps) + await counting_in_a_thread.start(run, steps)


unserved = aiki.workflow("w-unserved")


@unserved.version("1")
async def unserved_flow(run: aiki.Run[None]) -> None:
    """Served by no worker: starting it as a child is the parent's error."""


adopting = aiki.workflow("w-adopting")


@adopting.version("1")
async def adopting_flow(run: aiki.Run[bool], catch: bool) -> str:
    """Starts a child of a version no worker serves; catches the error or not."""
    try:
        await unserved_flow.start_as_child(run)
    except aiki.WorkflowNotFoundError as exc:
        if not catch:
            raise
        return f"caught: {exc.message}"
    return "started"


@aiki.task(retry=aiki.retry.fixed(3, delay_seconds=0.01))
def wobbly(key: str) -> str:
    """Fails twice (retried), then for good; every later attempt fails for good."""
    attempt = record_effect(key, "wobbly")
    if attempt < 3:
        raise ConnectionError(f"attempt {attempt}: the service is down")
    raise aiki.NonRetryableError("the service answered nonsense")


wobbling = aiki.workflow("w-wobbling")


@wobbling.version("1")
async def wobbly_flow(run: aiki.Run[str], key: str) -> str:
    return await wobbly.start(run, key)


@attrs.frozen
class Nap:
    account: str
    seconds: float


exclusive = aiki.workflow("w-exclusive")


@exclusive.version(
    "1", limits=[aiki.ConcurrencyLimit(name="w-one-per-account", key="account", per_key=1,
                                       holds="open")],
)  # fmt: skip
async def exclusive_flow(run: aiki.Run[str], nap: Nap) -> str:
    """One open run per account: a second one waits at the gate while the first sleeps."""
    cut_short = await run.sleep("nap", seconds=nap.seconds)
    return "cut short" if cut_short else "slept"


waits_worker = aiki.Worker(
    sleeper, quick_flow, collect, child_flow, parent_flow, nesting_flow, controlled_flow,
    timing_out_flow, task_timeout_flow, concurrent_flow, wide_flow, leaf_flow, progress_flow,
    adopting_flow, wobbly_flow, exclusive_flow, concurrency=8,
)  # fmt: skip
slot_sleepy = aiki.workflow("w-slot-sleepy")
slot_quick = aiki.workflow("w-slot-quick")


@slot_sleepy.version("1")
async def slot_sleeper(run: aiki.Run[float], seconds: float) -> str:
    return "cut short" if await run.sleep("nap", seconds=seconds) else "slept"


@slot_quick.version("1")
async def slot_quick_flow(run: aiki.Run[int], x: int) -> int:
    return await double.start(run, x)


one_slot_worker = aiki.Worker(slot_sleeper, slot_quick_flow, concurrency=1)
