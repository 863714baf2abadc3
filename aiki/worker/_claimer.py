"""The claimer: takes over stream entries a consumer received but never acknowledged.

A worker that dies between reading an entry and finishing its run leaves the entry in
the consumer group's pending list. Every ``interval`` the claimer asks Redis for entries
idle longer than ``min_idle_seconds`` (``XAUTOCLAIM``), for as many as it has free slots,
and hands them to the run actors, which claim the run through the server; a run someone
else holds is refused there and the entry is dropped. Entries of runs this worker is
executing right now are left alone (a long run is not an abandoned one).
"""

from __future__ import annotations

import logging
from typing import Final

import attrs
import trio

from actors import Router, messages_or_ticks
from transport import RedisStreams, StreamError

from ..protocol import GROUP, QUEUED_RUN
from ._executor import ExecuteRun, Executing

logger = logging.getLogger(__name__)

BATCH: Final = 4
"""Entries claimed per stream and round: a trickle, since they wait for free slots."""


@attrs.define
class Claimer:
    """Actor: XAUTOCLAIM of entries idle too long in the group → run actors."""

    streams: RedisStreams
    stream_names: tuple[str, ...]
    consumer: str
    runs: Router[ExecuteRun]
    executing: Executing
    min_idle_seconds: float = 60.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Claim idle entries every half of ``min_idle_seconds`` until the mailbox closes."""
        task_status.started()
        async for _ in messages_or_ticks(inbox, max(0.1, self.min_idle_seconds / 2)):
            for stream in self.stream_names:
                try:
                    await self.claim_idle(stream)
                except StreamError as exc:  # Redis down or reset: the subscriber copes
                    logger.debug("claiming idle entries of %s failed: %s", stream, exc)

    async def claim_idle(self, stream: str) -> int:
        """Take over up to `BATCH` idle entries of ``stream``; return how many were handed on.

        Entries are claimed first, then each waits in line for a free slot (the semaphore
        is fair): reserving slots up front would starve behind the subscriber, which
        holds free slots while its read blocks.
        """
        claimed = await self.streams.autoclaim(
            stream, GROUP, self.consumer, min_idle_ms=int(self.min_idle_seconds * 1000),
            count=BATCH,
        )  # fmt: skip
        handed = 0
        for entry in claimed.entries:
            if QUEUED_RUN.decode(entry.payload).run_id in self.executing.running:
                continue  # ours, and still going
            logger.warning("took over entry %s idle for %.0f s", entry.entry_id,
                           self.min_idle_seconds)  # fmt: skip
            await self.executing.capacity.acquire()  # released by the run actor
            await self.runs.send(ExecuteRun(entry=entry))
            handed += 1
        return handed
