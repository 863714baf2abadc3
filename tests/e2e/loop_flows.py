"""Workflows for the task-loop tests: task bodies written for asyncio, for trio, for anyio,
and ones that block their event loop."""

from __future__ import annotations

import asyncio
import time

import anyio
import attrs
import redis.asyncio
import sniffio
import trio

import aiki

from .flows import record_effect


@attrs.frozen
class Probe:
    key: str
    redis_url: str


@attrs.frozen
class Block:
    loop: str
    seconds: float


@aiki.task
async def with_asyncio_libraries(probe: Probe) -> str:
    """Written for asyncio: ``redis.asyncio`` and ``asyncio.sleep``."""
    client = redis.asyncio.Redis.from_url(probe.redis_url)
    try:
        await client.set(f"e2e-loops:{probe.key}", "stored", ex=60)
        await asyncio.sleep(0.05)
        value = await client.get(f"e2e-loops:{probe.key}")
    finally:
        await client.aclose()
    assert value is not None
    return f"{value.decode()} on asyncio"


@aiki.task(loop="trio")
async def with_trio(x: int) -> str:
    await trio.sleep(0.01)
    return f"{x} on trio"


@aiki.task
async def with_anyio_on_asyncio(x: int) -> str:
    await anyio.sleep(0.01)
    return f"{x} via anyio on {sniffio.current_async_library()}"


@aiki.task(loop="trio")
async def with_anyio_on_trio(x: int) -> str:
    await anyio.sleep(0.01)
    return f"{x} via anyio on {sniffio.current_async_library()}"


@aiki.task
async def asyncio_until_cancelled(key: str) -> str:
    """Sleeps a minute on asyncio unless cancelled (records both)."""
    await asyncio.to_thread(record_effect, key, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        record_effect(key, "cancelled")
        raise
    return "finished"


@aiki.task
async def blocking_on_asyncio(seconds: float) -> str:
    time.sleep(seconds)  # noqa: ASYNC251 (the mistake: blocking code in an async def task)
    return "slept"


@aiki.task(loop="trio")
async def blocking_on_trio(seconds: float) -> str:
    time.sleep(seconds)  # noqa: ASYNC251
    return "slept"


loops = aiki.workflow("w-loops")
cancelled = aiki.workflow("w-loops-cancel")
blocking = aiki.workflow("w-loops-block")


@loops.version("1")
async def loops_flow(run: aiki.Run[Probe], probe: Probe) -> list[str]:
    return [
        await with_asyncio_libraries.start(run, probe),
        await with_trio.start(run, 1),
        await with_anyio_on_asyncio.start(run, 2),
        await with_anyio_on_trio.start(run, 3),
    ]


@cancelled.version("1")
async def cancelled_flow(run: aiki.Run[str], key: str) -> str:
    return await asyncio_until_cancelled.start(run, key)


@blocking.version("1")
async def blocking_flow(run: aiki.Run[Block], block: Block) -> str:
    task = blocking_on_trio if block.loop == "trio" else blocking_on_asyncio
    return await task.start(run, block.seconds)


loops_worker = aiki.Worker(loops_flow, cancelled_flow, blocking_flow, concurrency=4)
