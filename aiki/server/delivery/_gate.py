"""The gate actor: lets queued runs that wait for their concurrency limits through, as
their slots free up.

A run whose version names concurrency limits, when it becomes ``queued`` without all its
slots, waits in PostgreSQL (`aiki.server.store.gate`), holding no worker and no stream
entry. The gate runs passes (`store.gate.gate_pass`: one transaction, under a lock every
server shares, deciding with the pure `aiki.server.gate.release`) when woken (a start of
such a run on this server, or a run ending on it while runs wait) and on a tick: often
while runs wait, rarely otherwise (a run waiting that another server queued). The runs it
lets through go to the fast lane, published at once.

The gate also keeps queues shallow: a pass counts, per queue, the free slots of the live
workers serving it less the runs sent and not yet claimed (`Room`); a start for a queue
without room waits at the gate too (it takes no slot of any limit), so that when workers
are saturated, runs wait in PostgreSQL and go in order of priority, then fair share,
then age, as slots free up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping
from fractions import Fraction
from typing import Final

import attrs
import trio

from actors import Address, MailboxFullError
from transport.postgres import PostgresStore

from .. import store
from .._outages import Outage
from ..store.gate import Queue
from ._dispatcher import FAST_LEASE_SECONDS, FastLane, Wake, poke
from ._offers import Offers

logger = logging.getLogger(__name__)

GATE_BATCH: Final = 500
"""Runs one pass lets through at most."""
BUSY_SECONDS: Final = 0.05
"""Between passes while runs wait at the gate."""
IDLE_SECONDS: Final = 1.0
"""Between passes while none do (runs another server queued are found this late)."""


@attrs.frozen
class Open:
    """A run waiting at the gate was queued, or a slot freed while runs wait: a pass now."""


def open_gate(address: Address[Open]) -> None:
    """Wake the gate without waiting; a wake already pending is enough."""
    with contextlib.suppress(MailboxFullError):
        address.send_nowait(Open())


@attrs.define
class Room:
    """What this server's last gate pass saw of each queue: how many more runs its live
    workers can take, and whether runs wait at the gate for it. A start consults it (no
    I/O): it goes straight to its queue while there is room and nothing waits there, and
    waits at the gate otherwise, so that waiting runs go in order of priority and fair
    share, not in the order they reach a stream."""

    _room: dict[Queue, int] = attrs.Factory(dict)
    _backlog: frozenset[Queue] = frozenset()

    def update(self, room: Mapping[Queue, int], backlog: frozenset[Queue]) -> None:
        """What a pass saw."""
        self._room = dict(room)
        self._backlog = backlog

    def take(self, queue: Queue) -> bool:
        """Whether a start for ``queue`` may go straight to it (and take one of its room),
        rather than wait at the gate. A queue no pass has seen served goes straight."""
        if queue in self._backlog:
            return False
        left = self._room.get(queue)
        if left is None:
            return True
        if left <= 0:
            return False
        self._room[queue] = left - 1
        return True

    @property
    def waiting(self) -> bool:
        """Runs wait at the gate (as of the last pass): a slot freeing is worth a pass."""
        return bool(self._backlog)


@attrs.define
class Gate:
    """Actor: passes of the gate, on every wake and tick (see the module)."""

    store: PostgresStore
    lane: FastLane
    dispatcher: Address[Wake]
    room: Room
    offers: Offers
    """This server's open offers: the slots they hold are not free for the streams."""
    live_seconds: float
    """Workers not seen for this long have no room."""
    ahead: int = 4
    """Runs sent ahead of a queue's free slots, per live worker."""
    busy_seconds: float = BUSY_SECONDS
    idle_seconds: float = IDLE_SECONDS
    _passes: Mapping[str, Fraction] = attrs.Factory(dict)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Open],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run passes until the mailbox closes; outages are waited out."""
        outage = Outage("gate")
        task_status.started()
        waiting = True
        while True:
            with trio.move_on_after(self.busy_seconds if waiting else self.idle_seconds):
                try:
                    await inbox.receive()
                except trio.EndOfChannel:
                    return
            found = await outage.guard(self.pass_once)
            waiting = found is None or found > 0

    async def pass_once(self) -> int:
        """One pass; returns how many runs were found waiting (0: none)."""
        done = await self.store.transact(
            functools.partial(store.gate.gate_pass, batch=GATE_BATCH,
                              lease_seconds=FAST_LEASE_SECONDS, live_seconds=self.live_seconds,
                              ahead=self.ahead, offered=self.offers.by_queue(),
                              passes=self._passes)
        )  # fmt: skip
        self.room.update(done.room, done.backlog)
        # Passes of keys with nothing waiting are dropped: a key that waits again starts
        # at the lowest pass of those waiting then (no credit for its idle time).
        self._passes = {key: value for key, value in done.passes.items() if done.waiting}
        if done.admitted:
            logger.debug("the gate let %d runs through", len(done.admitted))
            for entry in done.admitted:
                if not self.lane.add(entry):
                    poke(self.dispatcher)  # the lane is full: the outbox publishes it
                    break
        return done.waiting
