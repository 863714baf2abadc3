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
from typing import Final

import attrs
import trio

from actors import Address, MailboxFullError, messages_or_ticks
from transport import PostgresStore, RedisStreams

from .._streams import QUEUED_RUN, QueuedRun, stream_for
from . import _store

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
    """Actor: outbox → Redis Streams, on every wake and every ``idle_scan_seconds``."""

    store: PostgresStore
    streams: RedisStreams
    idle_scan_seconds: float = 1.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Wake],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish until the mailbox closes (a crash here is restarted by the supervisor)."""
        task_status.started()
        await self.publish_pending()
        async for _ in messages_or_ticks(inbox, self.idle_scan_seconds):
            await self.publish_pending()

    async def publish_pending(self) -> int:
        """Publish every unleased outbox row; return how many runs were published."""
        published = 0
        while True:
            entries = await self.store.transact(
                lambda tx: _store.lease_outbox(tx, BATCH, LEASE_SECONDS)
            )
            if not entries:
                return published
            await self.streams.publish_many(
                [
                    (
                        stream_for(e.workflow, e.version, e.pool),
                        QUEUED_RUN.encode(QueuedRun(run_id=e.run_id, revision=e.revision)),
                    )
                    for e in entries
                ]
            )
            ids = [entry.outbox_id for entry in entries]
            await self.store.transact(functools.partial(_store.delete_outbox, outbox_ids=ids))
            published += len(entries)
            logger.debug("published %d runs", len(entries))
            if len(entries) < BATCH:
                return published
