"""The heartbeat: one message per interval for the whole worker, naming the runs it holds."""

from __future__ import annotations

import attrs
import trio

from actors import Address, messages_or_ticks

from .._protocol import Heartbeat
from ._executor import Executing
from ._link import Call, call


@attrs.define
class Heartbeats:
    """Actor: tells the server every ``interval_seconds`` that this worker is alive."""

    worker_id: str
    link: Address[Call]
    executing: Executing
    interval_seconds: float = 5.0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Beat until the mailbox closes."""
        task_status.started()
        async for _ in messages_or_ticks(inbox, self.interval_seconds):
            beat = Heartbeat(worker_id=self.worker_id, run_ids=self.executing.run_ids)
            with trio.fail_after(self.interval_seconds):
                await call(self.link, beat)
