"""The claim sweeper and heartbeat monitor.

Every ``interval``: runs whose claim was not refreshed within the claim timeout are
released and queued again (``recovery``), and workers silent for longer than the worker
timeout are marked dead, releasing every run they held. The revision bump of each release
fences the old owner: a worker that was only frozen gets a conflict on its next write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio

from actors import Address, messages_or_ticks
from transport import PostgresStore, Transaction

from . import store
from ._dispatcher import Wake, poke
from ._outages import Outage

logger = logging.getLogger(__name__)

BATCH: Final = 1000


@attrs.define
class Sweeper:
    """Actor: stale claims and dead workers → runs queued again."""

    store: PostgresStore
    dispatcher: Address[Wake]
    """Poked when runs were queued again."""
    claim_timeout_seconds: float = 30.0
    worker_timeout_seconds: float = 30.0
    on_released: Callable[[int], None] = lambda _count: None
    """Called with how many runs a sweep queued again (metrics)."""

    @property
    def interval_seconds(self) -> float:
        """A quarter of the claim timeout: recovery within timeout + interval."""
        return max(0.1, min(self.claim_timeout_seconds, self.worker_timeout_seconds) / 4)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep until the mailbox closes."""
        outage = Outage("claim sweeper")
        task_status.started()
        async for _ in messages_or_ticks(inbox, self.interval_seconds):
            await outage.guard(self.sweep)

    async def sweep(self) -> int:
        """Release stale claims and dead workers' runs; return how many runs were released."""

        def sweep(tx: Transaction) -> tuple[list[tuple[str, str | None]], list[str]]:
            released = store.recovery.release_stale_claims(tx, self.claim_timeout_seconds, BATCH)
            dead = store.recovery.mark_dead_workers(tx, self.worker_timeout_seconds, BATCH)
            return released, dead

        released, dead = await self.store.transact(sweep)
        for worker in dead:
            logger.warning("worker %s missed its heartbeats: marked dead, its runs released",
                           worker, extra={"worker_id": worker})  # fmt: skip
        for run_id, holder in released:
            logger.warning("run %s: claim of worker %s went stale; queued again", run_id, holder,
                           extra={"run_id": run_id, "worker_id": holder})  # fmt: skip
        if released:
            self.on_released(len(released))
        if released or dead:
            poke(self.dispatcher)
        return len(released)
