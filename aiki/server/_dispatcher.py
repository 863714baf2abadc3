"""The dispatcher: publishes queued runs from the outbox to their Redis streams.

Every transaction that queues a run also writes an outbox row; the dispatcher leases
rows in batches, publishes them in one pipelined round trip, then deletes them. A crash
between publishing and deleting publishes those runs again after the lease expires;
workers then find them already claimed and drop the duplicate. PostgreSQL is the truth,
Redis the fast path.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from actors import Address, MailboxFullError, messages_or_ticks
from transport import PostgresStore, RedisStreams

from ..protocol import QUEUED_RUN, QueuedRun, stream_for
from . import store
from ._outages import Outage

if TYPE_CHECKING:
    from .store.outbox import OutboxEntry

logger = logging.getLogger(__name__)

BATCH: Final = 500
LEASE_SECONDS: Final = 30.0


@attrs.frozen
class Wake:
    """Something was queued: look at the outbox now."""


def poke(address: Address[Wake]) -> None:
    """Wake the dispatcher without waiting; a wake already pending is enough."""
    with contextlib.suppress(MailboxFullError):
        address.send_nowait(Wake())


@attrs.define
class Dispatcher:
    """Actor: outbox → Redis Streams, on every wake and every ``idle_scan_seconds``; runs
    published longer than ``redelivery_seconds`` ago and still queued are published again."""

    store: PostgresStore
    streams: RedisStreams
    idle_scan_seconds: float = 1.0
    redelivery_seconds: float = 60.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Wake],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish until the mailbox closes. Outages are waited out (starts keep arriving
        in the outbox meanwhile); other errors crash the actor for its supervisor."""
        outage = Outage("dispatcher")
        next_redelivery = trio.current_time() + self.redelivery_seconds / 2
        task_status.started()
        await outage.guard(self.publish_pending)
        async for _ in messages_or_ticks(inbox, self.idle_scan_seconds):
            await outage.guard(self.publish_pending)
            if trio.current_time() >= next_redelivery and not outage.ongoing:
                await outage.guard(self.redeliver)
                next_redelivery = trio.current_time() + self.redelivery_seconds / 2

    async def _publish(self, entries: list[OutboxEntry]) -> None:
        await self.streams.publish_many([
            (stream_for(e.namespace, e.workflow, e.version, e.pool),
             QUEUED_RUN.encode(QueuedRun(run_id=e.run_id, revision=e.revision)))
            for e in entries
        ])  # fmt: skip

    async def publish_pending(self) -> int:
        """Publish every unleased outbox row; return how many runs were published."""
        published = 0
        while True:
            entries = await self.store.transact(
                lambda tx: store.outbox.lease_outbox(tx, BATCH, LEASE_SECONDS)
            )
            if not entries:
                return published
            await self._publish(entries)
            ids = [entry.outbox_id for entry in entries]
            await self.store.transact(functools.partial(store.outbox.delete_outbox, outbox_ids=ids))
            published += len(entries)
            logger.debug("published %d runs", len(entries))
            if len(entries) < BATCH:
                return published

    async def redeliver(self) -> int:
        """Publish again queued runs that were published long ago (Redis may have lost
        them, e.g. restarted without persistence); duplicates are refused at claim."""
        entries = await self.store.transact(
            lambda tx: store.recovery.redeliverable(tx, self.redelivery_seconds, BATCH)
        )
        if entries:
            await self._publish(entries)
            logger.warning("re-published %d runs queued for over %.0f s", len(entries),
                           self.redelivery_seconds)  # fmt: skip
        return len(entries)
