"""The subscriber: hands out work to the run actors, for exactly their free capacity.

The worker's capacity is messages to this one actor: a run actor that finishes a run
sends `SlotFreed`, the claimer sends entries it took over (`TakeOver`), and only the
subscriber counts free slots (`Executing.free`, in the worker's table, so a restarted
subscriber carries on from the same count). A slot is taken when a run is handed to a
run actor, not when an entry is read, so a subscriber that crashes with entries in hand
loses no slot (the entries stay pending in Redis; the claimer takes them over later).

While at least two slots are free, it also offers slots to the server (`OfferSlot`, up to
`OFFERS` at once, each held open up to `OFFER_SECONDS`): a run started on that server
for a queue this worker serves comes back claimed in the offer's answer (eager dispatch:
no stream entry, no claim of its own). At least one free slot is always left to the
streams, which carry every other run (started elsewhere, queued again, recovered).

It asks Redis for as many entries as there are free slots not offered (``XREADGROUP
COUNT``; ``COUNT`` applies per stream, so a read over several streams may return more: the
surplus waits here for slots, as taken-over entries do, and goes out before the next
read). On a Redis Cluster a read names the streams of one hash slot only, so there is a
reader (its own connection, to the slot's node) per slot, each asking for its share of
the free slots. While
Redis is unreachable it pulls queued runs through the server (``claim_next``) and
returns to the streams when Redis answers again; after Redis lost its data (consumer
groups gone) it recreates the groups; a reader whose node went away (a cluster
failover) connects again to the slot's new owner.
"""

from __future__ import annotations

import contextlib
import logging
import random
import typing
from collections import deque
from typing import Final

import attrs
import trio

from actors import ActorStoppedError, Address, Backoff, MailboxFullError, Router
from transport import StreamError, StreamUnavailableError
from transport.redis_streams import RedisStreams, StreamEntry, StreamReader

from ..errors import AikiError
from ..protocol import GROUP, ClaimedRuns, ClaimNext, OfferSlot, ServedQueue, TransitionRun
from ._executor import LEASE_MARGIN, Executing
from ._link import Call, call
from ._messages import ExecuteRun, SlotFreed, SubscriberMsg, TakeOver

logger = logging.getLogger(__name__)

BLOCK_MS: Final = 2000
PULL_SECONDS: Final = 0.5
"""While Redis is down, how often the worker asks the server for queued runs."""
OFFERS: Final = 4
"""Slots offered to the server at once, at most."""
OFFER_SECONDS: Final = 10.0
"""How long an offer is held open at most (less with a short claim timeout: its claim's
lease is counted from the offer's sending, and must not be mostly gone when it arrives)."""
OFFER_RETRY: Final = Backoff(initial_seconds=0.5, max_seconds=10.0)
ANSWER_GRACE_SECONDS: Final = 40.0
"""How long past its wait an offer's answer may take (a start that took it may still be
committing, up to the server's bound on that)."""


def mailbox_capacity(concurrency: int) -> int:
    """Room for a `SlotFreed` from every run actor and a `TakeOver`: sends never wait."""
    return concurrency + 2


@attrs.define
class Subscriber:
    """Actor: free slots (messages) and stream entries → run actors."""

    streams: RedisStreams
    stream_names: tuple[str, ...]
    consumer: str
    runs: Router[ExecuteRun]
    executing: Executing
    link: Address[Call[typing.Any]]
    queues: tuple[ServedQueue, ...] = ()
    """What this worker serves, named in its offers (none: it offers no slots)."""
    _backlog: deque[StreamEntry] = attrs.Factory(deque)
    _changed: trio.Event = attrs.Factory(trio.Event)
    _offered: int = 0
    """Free slots held by offers open on the server."""
    _pulling: trio.Lock = attrs.Factory(trio.Lock)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[SubscriberMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand out work until the mailbox closes (then stop taking work)."""
        await self._ensure_groups()
        groups = self.streams.read_groups(self.stream_names)
        async with trio.open_nursery() as nursery:
            for group in groups:
                nursery.start_soon(self._feed, group, len(groups))
            if self.queues:
                for _ in range(OFFERS):
                    nursery.start_soon(self._offer_slots)
            task_status.started()
            async for message in inbox:
                match message:
                    case SlotFreed():
                        self.executing.free += 1
                    case TakeOver(entries=entries):
                        self._backlog.extend(entries)
                    case _:
                        typing.assert_never(message)
                self._notify()
            nursery.cancel_scope.cancel()

    @property
    def _spare(self) -> int:
        """Free slots not held by offers."""
        return self.executing.free - self._offered

    def _notify(self) -> None:
        """The slots changed: wake every task waiting for them (each checks again)."""
        self._changed.set()
        self._changed = trio.Event()

    async def _free_slot(self, spare: int = 1) -> None:
        """Wait until at least ``spare`` free slots are not held by offers."""
        while self._spare < spare:
            await self._changed.wait()

    async def _hand_out(self, message: ExecuteRun) -> None:
        self.executing.free -= 1
        await self.runs.send(message)

    async def _feed(self, streams: tuple[str, ...], readers: int) -> None:
        """Read ``streams`` (one reader's group of ``readers``) for free slots, reading
        again on a new connection after an error."""
        while True:
            try:
                async with self.streams.open_reader(GROUP, self.consumer, streams) as reader:
                    await self._read(reader, streams, readers)
            except StreamUnavailableError as exc:
                async with self._pulling:  # one reader pulls; the others wait for it
                    if await self._redis_answers():  # only this reader's node: soon again
                        logger.warning("stream read failed (%s): reading again", exc)
                        await trio.sleep(PULL_SECONDS)
                    else:
                        logger.warning("Redis unavailable (%s): pulling runs through the "
                                       "server", exc)  # fmt: skip
                        await self._pull_until_redis_is_back()
            except StreamError as exc:  # e.g. NOGROUP: Redis restarted without its data
                logger.warning("stream read failed (%s): recreating consumer groups", exc)
                try:
                    await self._ensure_groups()
                except StreamError:
                    await trio.sleep(PULL_SECONDS)

    async def _read(self, reader: StreamReader, streams: tuple[str, ...], readers: int) -> None:
        while True:
            await self._free_slot()
            if not self._backlog:
                share = max(1, -(-self._spare // readers))  # (rounded up)
                entries = await reader.read(streams, count=share, block_ms=BLOCK_MS)
                self._backlog.extend(entries)
            while self._backlog and self._spare > 0:
                await self._hand_out(ExecuteRun(entry=self._backlog.popleft()))

    async def _offer_slots(self) -> None:
        """Offer one free slot to the server at a time, while two or more are spare (one
        stays with the streams); hand out the run a start claimed for it."""
        delays = OFFER_RETRY.delays(random.Random())
        while True:
            await self._free_slot(spare=2)
            lease = self.executing.lease_seconds
            wait = OFFER_SECONDS if lease is None else min(OFFER_SECONDS, LEASE_MARGIN * lease)
            request = OfferSlot(worker_id=self.consumer, queues=self.queues, wait_seconds=wait)
            self._offered += 1
            sent = trio.current_time()
            try:
                with trio.fail_after(wait + ANSWER_GRACE_SECONDS):
                    reply = await call(self.link, request, orphaned=self._give_back)
            except (AikiError, trio.TooSlowError) as exc:
                logger.debug("offering a slot failed: %s", exc)
                reply = None
            finally:
                self._offered -= 1
                self._notify()
            if reply is None:
                await trio.sleep(next(delays))
                continue
            delays = OFFER_RETRY.delays(random.Random())
            for claim in reply.claims:  # held now (the slot was ours all along)
                await self._hand_out(ExecuteRun(claim=claim, claimed_after=sent))

    def _give_back(self, reply: ClaimedRuns) -> None:
        """An offer answered after this subscriber stopped waiting for it (it is stopping
        or restarting): give its claims back at once rather than leave them to the claim
        timeout (best effort: with the link's mailbox full, the timeout it is)."""
        for claim in reply.claims:
            give_back = TransitionRun(run_id=claim.run.id, revision=claim.run.revision,
                                      status="queued", reason="offered slot withdrawn")  # fmt: skip
            reply_to, unread = trio.open_memory_channel[typing.Any](1)
            unread.close()  # nobody waits for the answer
            with contextlib.suppress(MailboxFullError, ActorStoppedError):
                self.link.send_nowait(Call(request=give_back, reply_to=reply_to))

    async def _ensure_groups(self) -> None:
        for stream in self.stream_names:
            await self.streams.ensure_group(stream, GROUP, start_id="0")

    async def _redis_answers(self) -> bool:
        """Whether Redis answers, with every stream's consumer group there."""
        try:
            await self.streams.ping()
            await self._ensure_groups()
        except StreamError:
            return False
        return True

    async def _pull_until_redis_is_back(self) -> None:
        """Degraded mode: claim queued runs through the server until Redis answers again."""
        while True:
            if await self._redis_answers():
                logger.warning("Redis is back: reading streams again")
                return
            if self._spare > 0:
                try:
                    with trio.fail_after(30):
                        reply = await call(
                            self.link, ClaimNext(worker_id=self.consumer, limit=self._spare)
                        )
                except (AikiError, trio.TooSlowError) as exc:
                    logger.debug("pulling runs failed: %s", exc)
                else:
                    for claim in reply.claims:  # held now: each needs a run actor
                        await self._hand_out(ExecuteRun(claim=claim))
            await trio.sleep(PULL_SECONDS)
