"""Workflows for the recovery tests: tasks that wait on a gate and leave side effects."""

from __future__ import annotations

import os
import signal
import time

import trio

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


@aiki.task
def note(label: str) -> str:
    """Records that its body ran (once per execution of the body)."""
    record_effect(label, "note")
    return label


def wait_for_gate(key: str) -> None:
    while not gate_open(key):
        time.sleep(0.02)


gating = aiki.workflow("r-gating")
simple = aiki.workflow("r-simple")
takeover = aiki.workflow("r-takeover")
between = aiki.workflow("r-between")


@gating.version("1")
async def gating_flow(run: aiki.Run[str], key: str) -> str:
    return await gated.start(run, key)


@simple.version("1")
async def simple_flow(run: aiki.Run[int], x: int) -> int:
    return await plain.start(run, x)


@takeover.version("1")
async def takeover_flow(run: aiki.Run[int], x: int) -> int:
    return await plain.start(run, x)


@between.version("1")
async def between_flow(run: aiki.Run[str], key: str) -> str:
    """Two tasks with a wait between them that writes nothing (so a worker frozen there
    learns it lost the run only when it tries the next task)."""
    await note.start(run, f"{key}/before")
    await trio.to_thread.run_sync(wait_for_gate, key)
    return await note.start(run, f"{key}/after")


@aiki.task
def crash(key: str) -> str:
    """A poison pill: kills the worker process running it, every time."""
    record_effect(key, "crash")
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


poison = aiki.workflow("r-poison")


@poison.version("1")
async def poison_flow(run: aiki.Run[str], key: str) -> str:
    return await crash.start(run, key)


recovery_worker = aiki.Worker(gating_flow, simple_flow, between_flow, concurrency=4)
poison_worker = aiki.Worker(poison_flow, simple_flow, concurrency=4)
takeover_worker = aiki.Worker(takeover_flow, concurrency=2)
