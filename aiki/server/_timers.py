"""Timers: queue runs again when their retry delay has passed.

PostgreSQL holds every deadline (``wake_at``); the actor sleeps until the earliest one,
or until told about a sooner one, and re-scans every ``scan_seconds`` in any case, so a
restart loses nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio

from transport import PostgresStore

from . import _store

logger = logging.getLogger(__name__)

BATCH: Final = 500


@attrs.frozen
class RetryScheduled:
    """A run will be due in ``delay_seconds``."""

    delay_seconds: float


@attrs.define
class Timers:
    """Actor: awaiting_retry → queued when due."""

    store: PostgresStore
    on_queued: Callable[[], None]
    scan_seconds: float = 5.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[RetryScheduled],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fire due retries until the mailbox closes."""
        task_status.started()
        while True:
            requeued = await self.store.transact(lambda tx: _store.requeue_due_retries(tx, BATCH))
            if requeued:
                logger.debug("queued %d runs for retry", requeued)
                self.on_queued()
                if requeued == BATCH:
                    continue
            wait = await self._seconds_to_next_wake()
            with trio.move_on_after(wait):
                while True:
                    try:
                        message = await inbox.receive()
                    except trio.EndOfChannel:
                        return
                    if message.delay_seconds < wait:
                        break  # sooner than what we sleep for: re-plan

    async def _seconds_to_next_wake(self) -> float:
        due = await self.store.transact(_store.next_wake)
        if due is None:
            return self.scan_seconds
        seconds = (due - dt.datetime.now(dt.UTC)).total_seconds()
        return min(self.scan_seconds, max(0.0, seconds) + 0.005)
