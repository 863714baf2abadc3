"""Workflows for retrying failed runs after a fix (`tests.e2e.test_retries`).

``charge`` has a bug until the test "deploys the fix" by opening the order's gate: it
fails for good (no retry helps). Every task body counts its executions in
``e2e_effects``, so the test sees what a retry runs again and what it replays.
"""

from __future__ import annotations

import attrs

import aiki

from .flows import gate_open, record_effect


@attrs.frozen
class Order:
    key: str
    """Where the tasks count their executions."""
    fix: str
    """The gate that, once open, is the fix."""


@aiki.task
def prepare(key: str) -> str:
    record_effect(key, "prepare")
    return "prepared"


@aiki.task(retry=aiki.retry.fixed(2, delay_seconds=0.01))
def charge(order: Order) -> str:
    record_effect(order.key, "charge")
    if not gate_open(order.fix):
        raise aiki.NonRetryableError("a bug: charging fails until the fix is deployed")
    return "charged"


ordering = aiki.workflow("e2e-order")
batching = aiki.workflow("e2e-batch")


@ordering.version("1")
async def order_flow(run: aiki.Run[str], order: Order) -> str:
    prepared = await prepare.start(run, order.key)
    charged = await charge.start(run, order)
    return f"{prepared}+{charged}"


@batching.version("1")
async def batch_flow(run: aiki.Run[str], order: Order) -> str:
    """Prepares, then runs the order as a child; fails as the child did."""
    await prepare.start(run, f"{order.key}/batch")
    child = await order_flow.start_as_child(run, order)
    outcome = await child.wait_for_status("completed")
    if not outcome.success:
        raise aiki.NonRetryableError(f"the order {outcome.status}")
    return f"batch: {outcome.output}"


retry_worker = aiki.Worker(order_flow, batch_flow, concurrency=32)


lonely = aiki.workflow("e2e-lonely")


@lonely.version("1")
async def lonely_flow(run: aiki.Run[str], key: str) -> str:
    return await prepare.start(run, key)


lonely_worker = aiki.Worker(lonely_flow, concurrency=1)
"""Serves only ``e2e-lonely@1``: the test kills it, and the version is left unserved."""
