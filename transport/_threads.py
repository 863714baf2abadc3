"""Running blocking client calls in threads without losing track of them on cancel.

``trio.to_thread.run_sync(..., abandon_on_cancel=True)`` returns at once on cancel but
leaves the thread running: a Redis read then swallows the next entry, a PostgreSQL
transaction may commit after its caller gave up. `run_sync_interruptible` instead keeps
waiting for the thread, and on cancel calls an ``interrupt`` that makes the blocking
call return early (``CLIENT UNBLOCK``, a PostgreSQL cancel request). The caller still
sees `trio.Cancelled`, but only once the thread is done, so the outcome is settled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")

Interrupt = Callable[[Callable[[], bool]], Awaitable[None]]
"""Makes a blocked call return; gets a ``finished()`` check to stop retrying early."""


async def run_sync_interruptible(
    fn: Callable[[], T],
    *,
    limiter: trio.CapacityLimiter,
    interrupt: Interrupt,
    interrupt_grace_seconds: float,
) -> T:
    """Run ``fn`` in a thread and return its result; on cancel, interrupt it and wait.

    Args:
        limiter: bounds how many such threads run at once.
        interrupt: awaited (shielded, for at most ``interrupt_grace_seconds``) if the
            caller is cancelled while ``fn`` runs.

    Cancellation: raises `trio.Cancelled` only after ``fn`` has returned or raised; its
        result is dropped, so ``fn`` must record anything that must not be lost.
    """
    finished = False

    def is_finished() -> bool:
        return finished

    async def interrupt_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not finished:
                with trio.move_on_after(interrupt_grace_seconds, shield=True):
                    await interrupt(is_finished)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(interrupt_on_cancel)
        # Not abandonable: cancellation waits for the thread, the interrupt speeds it up.
        result: outcome.Outcome[T] = await outcome.acapture(_in_thread, fn, limiter)
        finished = True
        nursery.cancel_scope.cancel()
    return result.unwrap()


async def _in_thread(fn: Callable[[], T], limiter: trio.CapacityLimiter) -> T:
    return await trio.to_thread.run_sync(fn, limiter=limiter)
