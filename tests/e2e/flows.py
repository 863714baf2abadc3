"""Workflows the end-to-end tests run in real worker processes.

Task bodies record side effects in PostgreSQL (``e2e_effects``, in the schema that
``AIKI_E2E_DATABASE_URL`` selects), so a test can count how often each body really ran,
across processes and crashes.
"""

from __future__ import annotations

import os
import time

import attrs
import psycopg
import trio

import aiki


def _effects_url() -> str:
    return os.environ["AIKI_E2E_DATABASE_URL"]


def record_effect(key: str, task: str) -> int:
    """Insert one side-effect row; return how many rows (attempts) this key/task has now."""
    with psycopg.connect(_effects_url(), autocommit=True) as conn:
        conn.execute("INSERT INTO e2e_effects (key, task) VALUES (%s, %s)", (key, task))
        row = conn.execute(
            "SELECT count(*) FROM e2e_effects WHERE key = %s AND task = %s", (key, task)
        ).fetchone()
    return int(row[0]) if row else 0


def gate_open(key: str) -> bool:
    """True once the test opened the gate for ``key``."""
    with psycopg.connect(_effects_url(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM e2e_gates WHERE key = %s", (key,)).fetchone() is not None


@attrs.frozen
class Step:
    value: int
    index: int


@aiki.task
async def double(x: int) -> int:
    return 2 * x


@aiki.task
async def step(s: Step) -> int:
    return s.value * 3 + s.index


@aiki.task(retry=aiki.retry.fixed(5, delay_seconds=0.01))
def flaky(key: str) -> str:
    attempt = record_effect(key, "flaky")
    if attempt < 3:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"ok after {attempt}"


@aiki.task(retry=aiki.retry.fixed(5, delay_seconds=0.01))
def declined(key: str) -> str:
    record_effect(key, "declined")
    raise aiki.NonRetryableError("card declined")


@aiki.task
def first(key: str) -> str:
    record_effect(key, "first")
    return "first done"


@aiki.task
def second(key: str) -> str:
    while not gate_open(key):  # the test kills this worker while it waits here
        time.sleep(0.02)
    record_effect(key, "second")
    return "second done"


@aiki.task(loop="trio")
async def nap(seconds: float) -> str:
    await trio.sleep(seconds)
    return f"slept {seconds}"


w1 = aiki.workflow("e2e-w1")
w5 = aiki.workflow("e2e-w5")
retrying = aiki.workflow("e2e-retrying")
failing = aiki.workflow("e2e-failing")
crashing = aiki.workflow("e2e-crashing")
napping = aiki.workflow("e2e-napping")
retrying_workflow = aiki.workflow("e2e-workflow-retry")
bad_output = aiki.workflow("e2e-bad-output")
swallowing = aiki.workflow("e2e-swallowing")


@w1.version("1")
async def one_task(run: aiki.Run[int], x: int) -> int:
    return await double.start(run, x)


@w5.version("1")
async def five_tasks(run: aiki.Run[int], x: int) -> int:
    value = x
    for index in range(5):
        value = await step.start(run, Step(value, index))
    return value


@retrying.version("1")
async def retrying_flow(run: aiki.Run[str], key: str) -> str:
    return await flaky.start(run, key)


@failing.version("1")
async def failing_flow(run: aiki.Run[str], key: str) -> str:
    return await declined.start(run, key)


@crashing.version("1")
async def crashing_flow(run: aiki.Run[str], key: str) -> str:
    a = await first.start(run, key)
    b = await second.start(run, key)
    return f"{a}+{b}"


@aiki.task
def once(key: str) -> str:
    record_effect(key, "once")
    return "once done"


@retrying_workflow.version("1", retry=aiki.retry.fixed(3, delay_seconds=0.2))
async def workflow_retry_flow(run: aiki.Run[str], key: str) -> str:
    done = await once.start(run, key)
    if run.attempt == 1:
        raise ConnectionError("the first attempt of the workflow fails after its task")
    return f"{done} on attempt {run.attempt}"


@bad_output.version("1")
async def bad_output_flow(run: aiki.Run[int], x: int) -> int:
    return f"not an int: {x}"  # type: ignore[return-value]


@aiki.task
def gated(key: str) -> str:
    while not gate_open(key):
        time.sleep(0.02)
    return "task done"


@aiki.task
def after(key: str) -> str:
    record_effect(key, "after")
    return "after done"


@swallowing.version("1")
async def swallowing_flow(run: aiki.Run[str], key: str) -> str:
    try:
        result = await gated.start(run, key)
    except Exception as error:  # a careless handler: swallows everything
        result = f"swallowed {type(error).__name__}"
    await after.start(run, key)
    return result


@napping.version("1")
async def napping_flow(run: aiki.Run[float], seconds: float) -> str:
    return await nap.start(run, seconds)


def expected_five(x: int) -> int:
    value = x
    for index in range(5):
        value = value * 3 + index
    return value


main_worker = aiki.Worker(
    one_task,
    five_tasks,
    retrying_flow,
    failing_flow,
    workflow_retry_flow,
    bad_output_flow,
    swallowing_flow,
    concurrency=16,
)
crash_worker = aiki.Worker(crashing_flow, concurrency=2)
napping_worker = aiki.Worker(napping_flow, crashing_flow, concurrency=2)
