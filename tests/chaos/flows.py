"""The chaos load: workflows mixing tasks, retries, sleeps, events and slow tasks.

Every task body appends a side-effect row ``(key, label)`` before it returns, so the checks
can tell a body that ran again after its result was recorded (a bug) from one re-run
because it was in flight at a crash (at-least-once, expected).
"""

from __future__ import annotations

import os
import typing

import attrs
import psycopg
import trio

import aiki

_connection: psycopg.Connection[tuple[object, ...]] | None = None


def record_effect(key: str, label: str) -> int:
    """Append a side-effect row; return how many this (key, label) has now."""
    global _connection
    for _ in range(2):
        try:
            if _connection is None or _connection.closed:
                _connection = psycopg.connect(
                    os.environ["AIKI_CHAOS_DATABASE_URL"], autocommit=True, connect_timeout=5
                )
            _connection.execute(
                "INSERT INTO chaos_effects (key, label) VALUES (%s, %s)", (key, label)
            )
            row = _connection.execute(
                "SELECT count(*) FROM chaos_effects WHERE key = %s AND label = %s", (key, label)
            ).fetchone()
            return int(row[0]) if row else 0
        except psycopg.OperationalError:
            _connection = None  # PostgreSQL restarted: reconnect once, else fail the attempt
    raise ConnectionError("cannot record the side effect")


@attrs.frozen
class Step:
    key: str
    label: str
    value: int
    hold_seconds: float = 0.02


@attrs.frozen
class Go:
    by: str


@aiki.task(retry=aiki.retry.fixed(20, delay_seconds=0.2), loop="trio")
async def step(s: Step) -> int:
    await trio.to_thread.run_sync(record_effect, s.key, s.label)
    await trio.sleep(s.hold_seconds)  # keeps bodies in flight when faults hit
    return s.value + 1


@aiki.task(retry=aiki.retry.fixed(20, delay_seconds=0.2), loop="trio")
async def flaky(s: Step) -> int:
    attempt = await trio.to_thread.run_sync(record_effect, s.key, s.label)
    if attempt == 1:
        raise ConnectionError("the first attempt always fails")
    return s.value + 10


chaos = aiki.workflow("chaos")


@chaos.version("1", events={"go": aiki.event(Go)})
async def chaos_flow(run: aiki.Run[str], key: str) -> int:
    return await _body(run, key)


@attrs.frozen
class Grouped:
    key: str
    group: int


PER_GROUP = aiki.ConcurrencyLimit(name="chaos-per-group", key="group", per_key=2)
SHARED = aiki.ConcurrencyLimit(name="chaos-shared", per_key=6)
limited = aiki.workflow("chaos-limited")


@limited.version("1", events={"go": aiki.event(Go)}, limits=[PER_GROUP, SHARED])
async def limited_flow(run: aiki.Run[Grouped], job: Grouped) -> int:
    """The same steps under two limits: 2 runs of a group at once, 6 over all."""
    return await _body(run, job.key)


async def _body(run: aiki.Run[typing.Any], key: str) -> int:
    kind = key.split("-")[0]
    value = await step.start(run, Step(key, "a", 0))
    if kind == "retry":
        value = await flaky.start(run, Step(key, "b", value))
    elif kind == "sleep":
        await run.sleep("nap", seconds=1)
    elif kind == "event":
        go = await run.events.go.wait()
        value += len(go.by)
    elif kind == "slow":
        value = await step.start(run, Step(key, "b", value, hold_seconds=0.5))
    return await step.start(run, Step(key, "c", value))


EXPECTED = {"tasks": 2, "retry": 12, "sleep": 2, "event": 7, "slow": 3}
"""The output of each kind (the event is sent by "chaos": +5)."""

worker = aiki.Worker(chaos_flow, limited_flow, concurrency=8)
