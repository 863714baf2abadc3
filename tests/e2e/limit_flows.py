"""Workflows under concurrency limits (`tests.e2e.test_limits`).

``limited_flow`` takes a slot of two limits: one per customer (2 at once) and one over
every run (5 at once: a downstream API). It works, sleeps durably (which frees both
slots: they are held while executing) and works again (taking them again first).
"""

from __future__ import annotations

import time

import attrs

import aiki

PER_CUSTOMER = aiki.ConcurrencyLimit(name="e2e-per-customer", key="customer", per_key=2)
DOWNSTREAM = aiki.ConcurrencyLimit(name="e2e-downstream", per_key=5)


@attrs.frozen
class Job:
    customer: int
    n: int


@aiki.task
def work(job: Job) -> int:
    time.sleep(0.02)  # a call to the downstream API
    return 2 * job.n


limited = aiki.workflow("e2e-limited")


@limited.version("1", limits=[PER_CUSTOMER, DOWNSTREAM])
async def limited_flow(run: aiki.Run[int], job: Job) -> int:
    first = await work.start(run, job)
    await run.sleep("pause", seconds=0.05)
    second = await work.start(run, Job(job.customer, job.n + 1))
    return first + second


limit_worker = aiki.Worker(limited_flow, concurrency=16)
"""More slots than the limits let runs use: the limits, not the workers, bound them."""
