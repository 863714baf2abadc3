"""Workflows for the recovery tests: tasks that wait on a gate and leave side effects."""

from __future__ import annotations

import os
import time

import aiki

from .flows import gate_open, record_effect


@aiki.task
def gated(key: str) -> str:
    """Waits for the test to open the gate, then records which process finished it."""
    while not gate_open(key):
        time.sleep(0.02)
    record_effect(key, f"gated by {os.getpid()}")
    record_effect(key, "gated")
    return f"done by {os.getpid()}"


@aiki.task
async def plain(x: int) -> int:
    return x + 1


gating = aiki.workflow("r-gating")
simple = aiki.workflow("r-simple")
takeover = aiki.workflow("r-takeover")


@gating.version("1")
async def gating_flow(run: aiki.Run[str], key: str) -> str:
    return await gated.start(run, key)


@simple.version("1")
async def simple_flow(run: aiki.Run[int], x: int) -> int:
    return await plain.start(run, x)


@takeover.version("1")
async def takeover_flow(run: aiki.Run[int], x: int) -> int:
    return await plain.start(run, x)


recovery_worker = aiki.Worker(gating_flow, simple_flow, concurrency=4)
takeover_worker = aiki.Worker(takeover_flow, concurrency=2)
