"""Timers: everything that happens at a time. Sleeps end, wait timeouts pass, retries and
delayed starts are queued, run deadlines fail their runs, unclaimed runs become stalled.

PostgreSQL holds every deadline. The actor keeps the near ones (within ``horizon``) in an
in-memory heap, sleeps until the earliest, and then fires everything due with set-based
statements in batches. New deadlines arrive as messages from this server's operations;
a periodic scan refills the heap (deadlines created by other server instances, or
dropped when the mailbox was full), so restarts lose nothing and a large backlog costs
nothing until it is near.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import orjson
import trio

from actors import Address, MailboxFullError
from transport.postgres import PostgresStore, Transaction

from ..errors import ErrorInfo
from ..protocol import RunInfo
from ..wire import make_wire_converter
from . import store
from ._outages import Outage
from .delivery import Wake, poke
from .store.waits import Stopped

logger = logging.getLogger(__name__)

BATCH: Final = 1000
_CONVERT: Final = make_wire_converter()
RUN_TIMEOUT_ERROR: Final = orjson.dumps(_CONVERT.unstructure(ErrorInfo(
    type="aiki.errors.RunTimeoutError", message="the run did not end within its timeout",
    non_retryable=True, code="run_timeout",
))).decode()  # fmt: skip


@attrs.frozen
class Deadline:
    """Something becomes due at ``when``."""

    when: dt.datetime


def schedule(address: Address[Deadline], when: dt.datetime) -> None:
    """Tell the timers about a deadline without waiting; if the mailbox is full, the next
    scan finds it."""
    try:
        address.send_nowait(Deadline(when))
    except MailboxFullError:
        logger.debug("timers mailbox full; %s is found by the next scan", when)


@attrs.frozen
class Fired:
    """What one batch of firing did: ``queued`` runs (the dispatcher is poked), runs
    ``stopped`` (their workers are told), and deadlines to ``rewatch`` (new ones the
    batch created for this actor). ``full``: the batch hit its limit; fire again."""

    queued: int = 0
    stopped: list[Stopped] = attrs.Factory(list)
    rewatch: list[dt.datetime] = attrs.Factory(list)
    full: bool = False
    started: list[RunInfo] = attrs.Factory(list)
    """Runs the batch created (told to ``on_started``)."""
    skipped: int = 0


@attrs.define
class Timers:
    """Actor: fires due deadlines; the heap holds those within ``horizon_seconds``.

    What is due and what firing means are given: ``upcoming`` lists the deadlines within
    a horizon, ``fire_batch`` fires one batch in one transaction. The server runs two:
    ``timers`` (`fire_run_deadlines`) and ``scheduler`` (schedules' occurrences).
    """

    store: PostgresStore
    dispatcher: Address[Wake]
    """Poked when firing queued runs."""
    on_stopped: Callable[[list[Stopped]], Awaitable[None]]
    """Told the runs firing stopped (their workers are told to stop them)."""
    fire_batch: Callable[[Transaction], Fired] = attrs.field(factory=lambda: fire_run_deadlines)
    upcoming: Callable[[Transaction, float], list[dt.datetime]] = attrs.field(
        factory=lambda: store.waits.upcoming_deadlines
    )
    on_started: Callable[[Fired], None] = lambda _fired: None
    horizon_seconds: float = 60.0
    scan_seconds: float = 15.0
    stall_after_seconds: float | None = 300.0
    """Queued runs no worker took for this long are marked stalled at each scan (None:
    this instance does not)."""
    _heap: list[float] = attrs.field(factory=list, init=False)
    _next_scan: float = attrs.field(default=0.0, init=False)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Deadline],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fire deadlines until the mailbox closes (outages are waited out)."""
        outage = Outage("timers")
        await self._scan()
        task_status.started()
        while True:
            now = time.time()
            if self._heap and self._heap[0] <= now:
                if await outage.guard(self.fire) is not None:
                    while self._heap and self._heap[0] <= now:
                        heapq.heappop(self._heap)
                continue
            if now >= self._next_scan:
                await outage.guard(self._scan)
                self._next_scan = max(self._next_scan, time.time() + 0.1)
                continue
            soonest = self._heap[0] if self._heap else math.inf
            with trio.move_on_after(min(soonest, self._next_scan) - now):
                try:
                    message = await inbox.receive()
                except trio.EndOfChannel:
                    return
                self._watch(message.when.timestamp())

    def _watch(self, when: float) -> None:
        if when <= time.time() + self.horizon_seconds:
            heapq.heappush(self._heap, when)

    async def _scan(self) -> None:
        deadlines = await self.store.transact(lambda tx: self.upcoming(tx, self.horizon_seconds))
        self._heap = sorted(when.timestamp() for when in deadlines)
        if self.stall_after_seconds is not None:
            after = self.stall_after_seconds
            stalled = await self.store.transact(lambda tx: store.waits.mark_stalled(tx, after))
            if stalled:
                logger.warning("%d queued runs were not taken by any worker for %.0f s: "
                               "stalled", stalled, after)  # fmt: skip
        self._next_scan = time.time() + self.scan_seconds
        if self._heap and self._heap[0] <= time.time():
            await self.fire()

    async def fire(self) -> bool:
        """Fire everything due now (in batches of one transaction each), then queue and stop
        what that moved."""
        while True:
            fired = await self.store.transact(self.fire_batch)
            if fired.started or fired.skipped:
                self.on_started(fired)
            if fired.queued:
                poke(self.dispatcher)
            if fired.stopped:
                await self.on_stopped(fired.stopped)
            for when in fired.rewatch:
                # Rounded up to the millisecond, as the scan does (see upcoming_deadlines).
                self._watch(when.timestamp() + 0.001)
            if not fired.full:
                return True


def fire_run_deadlines(tx: Transaction) -> Fired:
    """Runs' deadlines: sleeps and wait timeouts end, retries and delayed starts are
    queued, runs past their deadline fail."""
    queued = (store.waits.fire_due_waits(tx, BATCH)
              + store.runs.requeue_due_retries(tx, BATCH)
              + store.waits.queue_scheduled(tx, BATCH))  # fmt: skip
    stopped = store.waits.fail_overdue(tx, BATCH, RUN_TIMEOUT_ERROR)
    return Fired(queued, stopped, full=queued >= BATCH or len(stopped) >= BATCH)
