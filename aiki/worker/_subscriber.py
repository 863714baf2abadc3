"""The subscriber: reads the worker's streams for exactly its free capacity.

While Redis is unreachable it falls back to pulling queued runs through the server
(``claim_next``) and returns to the streams when Redis answers again; after Redis lost its
data (consumer groups gone) it recreates the groups.

It takes every free run slot (waiting for at least one), asks Redis for that many
entries (``XREADGROUP COUNT``), and hands each to the run actors. ``COUNT`` applies per
stream, so a read over several streams may return more than asked: the surplus waits
here for slots and is handed out before the next read.
"""

from __future__ import annotations

import logging
import typing
from collections import deque
from typing import Final

import attrs
import trio

from actors import Address, Router
from transport import RedisStreams, StreamEntry, StreamError, StreamReader, StreamUnavailableError

from ..errors import AikiError
from ..protocol import GROUP, ClaimNext
from ._executor import ExecuteRun, Executing
from ._link import Call, call

logger = logging.getLogger(__name__)

BLOCK_MS: Final = 2000
PULL_SECONDS: Final = 0.5
"""While Redis is down, how often the worker asks the server for queued runs."""


@attrs.define
class Subscriber:
    """Actor: XREADGROUP for free capacity → run actors."""

    streams: RedisStreams
    stream_names: tuple[str, ...]
    consumer: str
    runs: Router[ExecuteRun]
    executing: Executing
    link: Address[Call[typing.Any]]
    _backlog: deque[StreamEntry] = attrs.Factory(deque)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read and hand out work until the mailbox closes (then stop taking work)."""
        await self._ensure_groups()
        async with (
            self.streams.open_reader(GROUP, self.consumer) as reader,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._feed, reader)
            task_status.started()
            async for _ in inbox:
                pass
            nursery.cancel_scope.cancel()

    async def _take_slots(self, *, wait: bool) -> int:
        capacity = self.executing.capacity
        slots = 0
        if wait:
            await capacity.acquire()
            slots = 1
        while capacity.value > 0:
            capacity.acquire_nowait()
            slots += 1
        return slots

    def _give_back(self, slots: int) -> None:
        for _ in range(slots):
            self.executing.capacity.release()

    async def _feed(self, reader: StreamReader) -> None:
        while True:
            slots = await self._take_slots(wait=True)
            handed = 0
            try:
                if not self._backlog:
                    self._backlog.extend(
                        await reader.read(self.stream_names, count=slots, block_ms=BLOCK_MS)
                    )
                while self._backlog and handed < slots:
                    await self.runs.send(ExecuteRun(entry=self._backlog.popleft()))
                    handed += 1
            except StreamUnavailableError as exc:
                logger.warning("Redis unavailable (%s): pulling runs through the server", exc)
                self._give_back(slots - handed)
                await self._pull_until_redis_is_back()
                continue
            except StreamError as exc:  # e.g. NOGROUP: Redis restarted without its data
                logger.warning("stream read failed (%s): recreating consumer groups", exc)
                self._give_back(slots - handed)
                await self._ensure_groups()
                continue
            self._give_back(slots - handed)

    async def _ensure_groups(self) -> None:
        for stream in self.stream_names:
            await self.streams.ensure_group(stream, GROUP, start_id="0")

    async def _pull_until_redis_is_back(self) -> None:
        """Degraded mode: claim queued runs through the server until Redis answers again."""
        while True:
            try:
                await self.streams.ping()
                await self._ensure_groups()
            except StreamError:
                pass
            else:
                logger.warning("Redis is back: reading streams again")
                return
            slots = await self._take_slots(wait=False)
            handed = 0
            try:
                if slots:
                    with trio.fail_after(30):
                        reply = await call(
                            self.link, ClaimNext(worker_id=self.consumer, limit=slots)
                        )
                    for claim in reply.claims:
                        await self.runs.send(ExecuteRun(claim=claim))
                        handed += 1
            except (AikiError, trio.TooSlowError) as exc:
                logger.debug("pulling runs failed: %s", exc)
            finally:
                self._give_back(slots - handed)
            await trio.sleep(PULL_SECONDS)
