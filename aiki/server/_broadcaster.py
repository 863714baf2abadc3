"""The broadcaster: pushes every committed run change to the subscribers it matches.

PostgreSQL is the source: the broadcaster reads committed transitions window by window
(`store.updates.committed_since`), so it sees every change exactly once, in each run's
revision order, whichever server instance, timer or sweeper made it, and even if that
process died right after its commit. It reads when this server committed a change (a
poke) and otherwise every ``tick_seconds`` (changes made by other instances), and only
while someone subscribes.

The fast path: an operation of this server that moved a run hands the change to the
subscriptions of that run at once (`Subscriptions.push_committed`), after its commit and
before the broadcaster's read; it is queued only where it is the next revision that
subscription has (so nothing is skipped or reordered), and the broadcaster's later copy is
dropped by revision.

Subscribers are never waited for: each has a bounded queue, and one that falls behind
loses its queued updates and gets a ``resync`` marker instead (it should re-read the
state it cares about). A slow subscriber slows neither the server nor other subscribers.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import attrs
import trio

from actors import Address, MailboxFullError

from ..protocol import RunUpdate, Subscribe, TaskProgress
from . import _committer, store
from ._committer import Commit
from ._outages import Outage

if TYPE_CHECKING:
    from transport.postgres import Transaction

logger = logging.getLogger(__name__)

Item = RunUpdate | TaskProgress
"""What a subscriber's queue holds."""

QUEUE_LIMIT: Final = 1024
"""Updates a subscriber may have waiting; beyond that it gets a resync marker."""


@attrs.frozen
class Poke:
    """This server committed a change: read now."""


def poke(address: Address[Poke]) -> None:
    """Wake the broadcaster without waiting; a poke already pending is enough."""
    with contextlib.suppress(MailboxFullError):
        address.send_nowait(Poke())


@attrs.define(eq=False)
class Subscriber:
    """One subscription's filter and queue (read by its session's sender)."""

    id: str
    filter: Subscribe
    limit: int = QUEUE_LIMIT
    namespace: str | None = None
    """Only this namespace's runs (None: every namespace's)."""
    queue: collections.deque[Item] = attrs.Factory(collections.deque)
    resync: bool = False
    """Updates were dropped since the last read: the reader must resynchronise."""
    dropped: int = 0
    _last: dict[str, int] = attrs.Factory(dict)
    _queued: dict[str, int] = attrs.Factory(dict)
    """For a subscription of given runs: the newest revision queued of each."""
    _ready: trio.Event = attrs.Factory(trio.Event)

    def matches(self, update: Item) -> bool:
        """Whether ``update`` is one this subscription asked for (progress only if asked,
        and counted as ``running`` for the status filter)."""
        wanted = self.filter
        if isinstance(update, TaskProgress):
            status: str = "running"
            if not wanted.progress:
                return False
        else:
            status = update.status
        return (
            (self.namespace is None or update.namespace == self.namespace)
            and (not wanted.run_ids or update.run_id in wanted.run_ids)
            and (wanted.workflow is None or update.workflow == wanted.workflow)
            and (wanted.version is None or update.version == wanted.version)
            and (not wanted.statuses or status in wanted.statuses)
        )

    def offer(self, update: Item) -> None:
        """Queue ``update`` unless full (then mark a resync); never waits."""
        if len(self.queue) >= self.limit:
            self.queue.clear()
            self.resync = True
            self.dropped += 1
        else:
            self.queue.append(update)
            if isinstance(update, RunUpdate) and self.filter.run_ids:
                known = self._queued.get(update.run_id, 0)
                self._queued[update.run_id] = max(known, update.revision)
        self._ready.set()

    def follows(self, update: RunUpdate) -> bool:
        """Whether ``update`` is the next revision of its run this subscription of given
        runs has (queued or taken): only then may it go ahead of the broadcaster."""
        run = update.run_id
        known = max(self._last.get(run, 0), self._queued.get(run, 0))
        return known > 0 and update.revision == known + 1

    def skip_through(self, revisions: dict[str, int]) -> None:
        """Push nothing of these runs up to these revisions (the subscriber has them)."""
        self._last.update(revisions)

    def replay(self, past: list[RunUpdate]) -> None:
        """Put recorded updates ahead of the live ones queued meanwhile (overlaps are
        dropped by revision in `take`)."""
        self.queue.extendleft(reversed(past))
        self._ready.set()

    async def take(self) -> tuple[list[Item], bool]:
        """Wait for updates; return them (each run's in revision order, none twice) and
        whether a resync marker is due first."""
        await self._ready.wait()
        self._ready = trio.Event()
        updates, self.queue = list(self.queue), collections.deque()
        resync, self.resync = self.resync, False
        if not self.filter.run_ids:
            return updates, resync  # nothing is replayed: nothing can repeat
        fresh: list[Item] = []
        for update in updates:
            # A replayed history and the live stream may overlap: each revision once.
            if isinstance(update, TaskProgress):
                fresh.append(update)
            elif update.revision > self._last.get(update.run_id, 0):
                self._last[update.run_id] = update.revision
                fresh.append(update)
        return fresh, resync


@attrs.define(eq=False)
class Subscriptions:
    """Every live subscription of this server, and how far the broadcaster has read.

    A table that outlives the broadcaster's incarnations (the server's tree owns it, as
    OTP's ETS tables outlive a crashed process): sessions add and remove subscriptions,
    the broadcaster reads committed changes into them. ``horizon`` is the position the
    next read starts from (None while nobody subscribes: nothing is read).
    """

    committer: Address[Commit[object]]
    queue_limit: int = QUEUE_LIMIT
    subscribers: dict[str, Subscriber] = attrs.Factory(dict)
    horizon: int | None = None
    broad: set[Subscriber] = attrs.Factory(set)
    """Subscriptions not limited to given runs."""
    by_run: dict[str, set[Subscriber]] = attrs.Factory(dict)
    """Subscriptions of given runs, by run."""
    idle: trio.CancelScope | None = None
    """The broadcaster's wait while nobody subscribed; a new subscription cancels it."""
    _ids: Iterator[int] = attrs.Factory(itertools.count)

    async def add(self, request: Subscribe, namespace: str | None = None) -> Subscriber:
        """Register a subscription (to the runs of ``namespace``; None: of every one); once
        this returns, every change committed afterwards reaches it (changes from before:
        `store.updates.history`)."""
        subscriber = Subscriber(f"s{next(self._ids)}", request, self.queue_limit, namespace)
        self.subscribers[subscriber.id] = subscriber
        if request.run_ids:  # indexed: an update is matched only against its run's
            for run_id in request.run_ids:
                self.by_run.setdefault(run_id, set()).add(subscriber)
        else:
            self.broad.add(subscriber)
        if self.idle is not None:
            self.idle.cancel()  # start ticking
        try:
            await self.start_reading()
        except BaseException:
            self.remove(subscriber.id)
            raise
        return subscriber

    async def start_reading(self) -> None:
        """Make sure changes committed from now on will be read."""
        if self.horizon is None:
            horizon = await _committer.transact(self.committer, store.updates.horizon)
            if self.horizon is None:
                self.horizon = horizon

    def push_committed(self, update: RunUpdate) -> int:
        """A change this server just committed: queue it for the subscriptions of its run
        that have every revision before it (the others get it from the broadcaster, in
        order); return how many took it."""
        taken = 0
        for subscriber in self.by_run.get(update.run_id, ()):
            if subscriber.matches(update) and subscriber.follows(update):
                subscriber.offer(update)
                taken += 1
        return taken

    def remove(self, subscription: str) -> None:
        """Forget a subscription (idempotent)."""
        subscriber = self.subscribers.pop(subscription, None)
        if subscriber is None:
            return
        self.broad.discard(subscriber)
        for run_id in subscriber.filter.run_ids:
            watching = self.by_run.get(run_id)
            if watching is not None:
                watching.discard(subscriber)
                if not watching:
                    del self.by_run[run_id]


@attrs.define
class Broadcaster:
    """Actor: committed transitions → matching subscribers."""

    subscriptions: Subscriptions
    tick_seconds: float = 0.02
    delivered: int = 0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Poke],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read and push on every poke and tick until the mailbox closes; outages are
        waited out (nothing is lost: the next read covers the whole gap)."""
        outage = Outage("broadcaster")
        task_status.started()
        table = self.subscriptions
        while True:
            # Ticks only while someone subscribes (a new subscription cuts the idle wait).
            with trio.CancelScope() as table.idle:
                with trio.move_on_after(self.tick_seconds if table.subscribers else math.inf):
                    try:
                        await inbox.receive()
                    except trio.EndOfChannel:
                        return
            table.idle = None
            await outage.guard(self.read_once)

    async def read_once(self) -> int:
        """Read the committed changes since the last read and push them; return how many."""
        table = self.subscriptions
        if not table.subscribers:
            table.horizon = None  # nobody listens: stop reading
            return 0
        if table.horizon is None:
            await table.start_reading()
            return 0
        since = table.horizon
        readers = set(table.subscribers.values())
        updates, horizon = await self._read(since, readers, None)
        table.horizon = horizon
        count = self._deliver(updates, readers)
        # Subscribers added while reading: the read may have filtered out their runs
        # (or its snapshot came after they registered), so read that window again for
        # them alone (and again, for any added meanwhile).
        while late := set(table.subscribers.values()) - readers:
            readers |= late
            extra, _ = await self._read(since, late, horizon)
            self._deliver(extra, late)
        return count

    async def _read(
        self, since: int, readers: set[Subscriber], until: int | None
    ) -> tuple[list[Item], int]:
        # Only the watched runs' changes when every subscription names its runs (waits
        # for one run's result, typically): the rest would be read for nobody.
        only = None
        if all(reader.filter.run_ids for reader in readers):
            only = sorted({run for reader in readers for run in reader.filter.run_ids})
        progress = any(reader.filter.progress for reader in readers)

        def read(tx: Transaction) -> tuple[list[Item], int]:
            updates, horizon = store.updates.committed_since(tx, since, only, until)
            items: list[Item] = list(updates)
            if progress:
                end = horizon if until is None else min(horizon, until)
                items += store.updates.progress_between(tx, since, end, only)
            return items, horizon

        # Through the committer: a read rides along with the writes of the batch (its
        # snapshot still excludes them: they are not committed).
        return await _committer.transact(self.subscriptions.committer, read)

    def _deliver(self, updates: list[Item], readers: set[Subscriber]) -> int:
        table = self.subscriptions
        for update in updates:
            for subscriber in (*table.broad, *table.by_run.get(update.run_id, ())):
                if subscriber in readers and subscriber.matches(update):
                    subscriber.offer(update)
                    self.delivered += 1
        return len(updates)
