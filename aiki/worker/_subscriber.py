"""The subscriber: reads the worker's streams for exactly its free capacity.

It takes every free run slot (waiting for at least one), asks Redis for that many
entries (``XREADGROUP COUNT``), and hands each to the run actors. ``COUNT`` applies per
stream, so a read over several streams may return more than asked: the surplus waits
here for slots and is handed out before the next read.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import attrs
import trio

from actors import Router
from transport import RedisStreams, StreamEntry, StreamReader

from .._streams import GROUP
from ._executor import ExecuteRun, Executing

logger = logging.getLogger(__name__)

BLOCK_MS: Final = 2000


@attrs.define
class Subscriber:
    """Actor: XREADGROUP for free capacity → run actors."""

    streams: RedisStreams
    stream_names: tuple[str, ...]
    consumer: str
    runs: Router[ExecuteRun]
    executing: Executing
    _backlog: deque[StreamEntry] = attrs.Factory(deque)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read and hand out work until the mailbox closes (then stop taking work)."""
        for stream in self.stream_names:
            await self.streams.ensure_group(stream, GROUP, start_id="0")
        async with (
            self.streams.open_reader(GROUP, self.consumer) as reader,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._feed, reader)
            task_status.started()
            async for _ in inbox:
                pass
            nursery.cancel_scope.cancel()

    async def _feed(self, reader: StreamReader) -> None:
        capacity = self.executing.capacity
        while True:
            await capacity.acquire()
            slots = 1
            while capacity.value > 0:
                capacity.acquire_nowait()
                slots += 1
            if not self._backlog:
                self._backlog.extend(
                    await reader.read(self.stream_names, count=slots, block_ms=BLOCK_MS)
                )
            handed = 0
            while self._backlog and handed < slots:
                await self.runs.send(ExecuteRun(entry=self._backlog.popleft()))
                handed += 1
            for _ in range(slots - handed):
                capacity.release()
