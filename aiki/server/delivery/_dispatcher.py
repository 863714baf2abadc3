"""The dispatcher: publishes queued runs from the outbox to their Redis streams.

Every transaction that queues a run also writes an outbox row; the dispatcher leases
rows in batches, publishes them in one pipelined round trip, then deletes them. A crash
between publishing and deleting publishes those runs again after the lease expires;
workers then find them already claimed and drop the duplicate. PostgreSQL is the truth,
Redis the fast path.

Starts take a faster lane: their transaction leases their outbox row for
`FAST_LEASE_SECONDS` already, and the server that committed them hands them to the
dispatcher (`FastLane`), which publishes them at once, with no transaction before it,
then forgets their rows. Should that publish not happen (a crash, Redis down, the lane
full), the lease runs out and the outbox publishes the run as any other.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Final

import attrs
import trio

from actors import Address, MailboxFullError, messages_or_ticks
from transport import StorageError, StreamUnavailableError
from transport.postgres import PostgresStore
from transport.redis_streams import RedisStreams

from ...protocol import QUEUED_RUN, QueuedRun, shard_of, stream_for
from .. import store
from .._outages import Outage
from ..store.outbox import OutboxEntry

logger = logging.getLogger(__name__)

BATCH: Final = 500
LEASE_SECONDS: Final = 30.0
FAST_LEASE_SECONDS: Final = 2.0
"""How long a start's outbox row is left to the fast lane before the outbox takes it."""
LANE_LIMIT: Final = 10_000
"""Runs the fast lane holds at most; more wait for their lease to end (the outbox)."""


@attrs.define(eq=False)
class FastLane:
    """Runs this server just queued, to publish at once: a bounded list the server's tree
    owns (it outlives the dispatcher's restarts), filled by operations, drained by the
    dispatcher."""

    limit: int = LANE_LIMIT
    _entries: list[OutboxEntry] = attrs.Factory(list)
    _ready: trio.Event = attrs.Factory(trio.Event)

    def add(self, entry: OutboxEntry) -> bool:
        """Hand ``entry`` over; False if the lane is full (the outbox publishes it then)."""
        if len(self._entries) >= self.limit:
            return False
        self._entries.append(entry)
        self._ready.set()
        return True

    async def take(self) -> list[OutboxEntry]:
        """Wait for entries; return every one there is."""
        await self._ready.wait()
        self._ready = trio.Event()
        entries, self._entries = self._entries, []
        return entries


def stream_entries(entries: list[OutboxEntry], shards: int) -> list[tuple[str, bytes]]:
    """The stream entry of each queued run, in order: on its queue's sub-stream
    `shard_of` its ID (one run's entries all go to one stream, in the order published)."""
    return [
        (stream_for(e.namespace, e.workflow, e.version, e.pool,
                    shard=shard_of(e.run_id, shards), shards=shards),
         QUEUED_RUN.encode(QueuedRun(run_id=e.run_id, revision=e.revision)))
        for e in entries
    ]  # fmt: skip


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
    lane: FastLane = attrs.Factory(FastLane)
    shards: int = 1
    """Sub-streams per queue: a run goes to sub-stream `shard_of` its ID."""

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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fast_lane)
            task_status.started()
            await outage.guard(self.publish_pending)
            async for _ in messages_or_ticks(inbox, self.idle_scan_seconds):
                await outage.guard(self.publish_pending)
                if trio.current_time() >= next_redelivery and not outage.ongoing:
                    await outage.guard(self.redeliver)
                    next_redelivery = trio.current_time() + self.redelivery_seconds / 2
            nursery.cancel_scope.cancel()

    async def _fast_lane(self) -> None:
        """Publish the lane's runs as they come (several at once under load). A failed
        publish is left to the outbox (their leases run out)."""
        while True:
            entries = await self.lane.take()
            try:
                await self._publish(entries)
                ids = [entry.outbox_id for entry in entries]
                await self.store.transact(
                    functools.partial(store.outbox.forget_outbox, outbox_ids=ids)
                )
            except (StreamUnavailableError, StorageError) as exc:
                if not exc.retryable:
                    raise  # a bug or bad data: crash for the supervisor
                logger.debug("fast publish of %d runs failed (%s); the outbox retries",
                             len(entries), exc)  # fmt: skip

    async def _publish(self, entries: list[OutboxEntry]) -> None:
        await self.streams.publish_many(stream_entries(entries, self.shards))

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
