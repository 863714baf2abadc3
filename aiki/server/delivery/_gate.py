"""The gate actor: lets queued runs that wait for their concurrency limits through, as
their slots free up.

A run whose version names concurrency limits, when it becomes ``queued`` without all its
slots, waits in PostgreSQL (`aiki.server.store.gate`), holding no worker and no stream
entry. The gate runs passes (`store.gate.gate_pass`: one transaction, under a lock every
server shares, deciding with the pure `aiki.server.gate.release`) when woken (a start of
such a run on this server) and on a tick: often while runs wait, rarely otherwise (a
slot freed by a run ending, or a run waiting that another server queued). The runs it
lets through go to the fast lane, published at once.
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
from ._dispatcher import FAST_LEASE_SECONDS, FastLane, Wake, poke

logger = logging.getLogger(__name__)

GATE_BATCH: Final = 500
"""Runs one pass lets through at most."""
BUSY_SECONDS: Final = 0.05
"""Between passes while runs wait at the gate."""
IDLE_SECONDS: Final = 1.0
"""Between passes while none do (runs another server queued are found this late)."""


@attrs.frozen
class Open:
    """A run waiting at the gate was queued: run a pass now."""


def open_gate(address: Address[Open]) -> None:
    """Wake the gate without waiting; a wake already pending is enough."""
    with contextlib.suppress(MailboxFullError):
        address.send_nowait(Open())


@attrs.define
class Gate:
    """Actor: passes of the gate, on every wake and tick (see the module)."""

    store: PostgresStore
    lane: FastLane
    dispatcher: Address[Wake]
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
                              lease_seconds=FAST_LEASE_SECONDS, passes=self._passes)
        )  # fmt: skip
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
