"""Workflows whose trio branches race and contend, for the replay end-to-end tests.

Patterns from other engines' public samples, written as a new user would with trio:
branches sharing a limiter while each starts a child, a sleep racing an event every
month, a sliding window of children (the next starts as soon as any open one completes),
and parallel per-item pipelines (a child, then a task). Parents and children are served
by different workers (``parents`` and ``children``), so a test can kill the parents'
workers between replays while children keep going.
"""

from __future__ import annotations

import math
import typing

import attrs
import trio

import aiki
from aiki.sdk._steps import Step

from .flows import record_effect


@attrs.frozen
class Item:
    batch: str
    index: int
    pause: float = 0.0
    """How long the child sleeps (durably) before it completes."""


@attrs.frozen
class Month:
    sleep_seconds: float
    """The month's 'thirty days': long for a month the test sends the event in."""


@aiki.task
def bill(key: str) -> str:
    """A side effect per month (counted: it must run once per month, whatever the replays)."""
    record_effect(key, "bill")
    return f"billed {key}"


@aiki.task
def finish(key: str) -> int:
    """The last stage of an item's pipeline."""
    return record_effect(key, "finish")


item = aiki.workflow("r-item")


@item.version("1")
async def process_item(run: aiki.Run[Item], work: Item) -> int:
    if work.pause > 0:
        await run.sleep("work", seconds=work.pause)
    return work.index * work.index


def _pause(index: int) -> float:
    """Children finish in a scrambled order."""
    return 0.05 + (index * 7 % 5) * 0.08


def _item(
    run: aiki.Run[typing.Any], batch: str, index: int, note: str = ""
) -> Step[aiki.ChildRun[int]]:
    return process_item.with_(reference_id=f"{run.id}-{batch}-{index}{note}").start_as_child(
        run, Item(batch, index, _pause(index))
    )


limited = aiki.workflow("r-limited")


@limited.version("1")
async def limited_fan_out(run: aiki.Run[int], count: int) -> list[int]:
    """One branch per record; each holds a limiter of 3 while its child runs."""
    limiter = trio.CapacityLimiter(3)
    results: dict[int, int] = {}

    async def one(index: int) -> None:
        async with limiter:
            child = await _item(run, "limited", index)
            done = await child.wait_for_status("completed")
            assert done.output is not None
            results[index] = done.output

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return [results[index] for index in range(count)]


monthly = aiki.workflow("r-monthly")


@monthly.version("1", events={"complete": aiki.event(str)})
async def monthly_billing(run: aiki.Run[list[Month]], months: list[Month]) -> list[str]:
    """Each month: bill, then race thirty days against a 'complete' event; whichever
    comes first cancels the other."""
    outcomes = []
    for number, month in enumerate(months):
        await bill.start(run, f"{run.id}-{number}")
        outcome = ""
        async with trio.open_nursery() as nursery:

            async def sleep(
                month: Month = month, scope: trio.CancelScope = nursery.cancel_scope
            ) -> None:
                nonlocal outcome
                await run.sleep("thirty-days", seconds=month.sleep_seconds)
                outcome = outcome or "slept"
                scope.cancel()

            async def wait(scope: trio.CancelScope = nursery.cancel_scope) -> None:
                nonlocal outcome
                completed = await run.events.complete.wait()
                outcome = outcome or f"event {completed}"
                scope.cancel()

            nursery.start_soon(sleep)
            nursery.start_soon(wait)
        outcomes.append(outcome)
    return outcomes


window = aiki.workflow("r-window")


@window.version("1")
async def sliding_window(run: aiki.Run[int], count: int) -> list[str]:
    """At most 3 children open; the next starts as soon as any open one completes. Each
    start names the completion that made room for it (in its reference ID and the log):
    a replay that decided otherwise would start another child."""
    send, receive = trio.open_memory_channel[int](math.inf)
    log: list[str] = []

    async def watch(index: int, child: aiki.ChildRun[int]) -> None:
        await child.wait_for_status("completed")
        send.send_nowait(index)

    async with trio.open_nursery() as nursery:
        opened = 0
        for index in range(count):
            note = ""
            if opened == 3:
                freed = await receive.receive()
                log.append(f"{freed}->{index}")
                note = f"-after-{freed}"
                opened -= 1
            child = await _item(run, "window", index, note)
            nursery.start_soon(watch, index, child)
            opened += 1
    return log


pipelines = aiki.workflow("r-pipelines")


@pipelines.version("1")
async def parallel_pipelines(run: aiki.Run[int], count: int) -> list[int]:
    """Per item, in parallel: a child, then a task on its result."""
    results: dict[int, int] = {}

    async def pipeline(index: int) -> None:
        child = await _item(run, "pipeline", index)
        done = await child.wait_for_status("completed")
        results[index] = await finish.start(run, f"{run.id}-{index}-{done.output}")

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(pipeline, index)
    return [results[index] for index in range(count)]


parents = aiki.Worker(limited_fan_out, monthly_billing, sliding_window, parallel_pipelines,
                      concurrency=8)  # fmt: skip
children = aiki.Worker(process_item, concurrency=16)
