"""The claimer: takes over stream entries a consumer received but never acknowledged.

A worker that dies between reading an entry and finishing its run leaves the entry in
the consumer group's pending list. Every ``interval`` the claimer asks Redis for entries
idle longer than ``min_idle_seconds`` (``XAUTOCLAIM``), a few at a time, and sends them
to the subscriber, which hands them to run actors as slots free; a run actor claims the
run through the server, and a run someone else holds is refused there and its entry
dropped. Entries of runs this worker is
executing right now are left alone (a long run is not an abandoned one).
"""

from __future__ import annotations

import logging
from typing import Final

import attrs
import trio

from actors import ActorStoppedError, Address, messages_or_ticks
from transport import StreamError
from transport.redis_streams import RedisStreams

from ..protocol import GROUP, QUEUED_RUN
from ._executor import Executing
from ._messages import SubscriberMsg, TakeOver

logger = logging.getLogger(__name__)

BATCH: Final = 4
"""Entries claimed per stream and round: a trickle, since they wait for free slots."""


@attrs.define
class Claimer:
    """Actor: XAUTOCLAIM of entries idle too long in the group → the subscriber."""

    streams: RedisStreams
    stream_names: tuple[str, ...]
    consumer: str
    subscriber: Address[SubscriberMsg]
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
                except ActorStoppedError:
                    return  # the worker is stopping: nothing takes work any more

    async def claim_idle(self, stream: str) -> int:
        """Take over up to `BATCH` idle entries of ``stream``; return how many were handed
        to the subscriber (which gives them to run actors as slots free).

        Raises:
            actors.ActorStoppedError: the subscriber stopped (the worker is shutting down;
                the entries stay pending in Redis for another consumer).
        """
        claimed = await self.streams.autoclaim(
            stream, GROUP, self.consumer, min_idle_ms=int(self.min_idle_seconds * 1000),
            count=BATCH,
        )  # fmt: skip
        taken = []
        for entry in claimed.entries:
            if QUEUED_RUN.decode(entry.payload).run_id in self.executing.running:
                continue  # ours, and still going
            logger.warning("took over entry %s idle for %.0f s", entry.entry_id,
                           self.min_idle_seconds)  # fmt: skip
            taken.append(entry)
        if taken:
            await self.subscriber.send(TakeOver(entries=tuple(taken)))
        return len(taken)
