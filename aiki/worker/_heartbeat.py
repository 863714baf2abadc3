"""The heartbeat: one message per interval for the whole worker, naming the runs it holds.

Each beat refreshes the server-side claims of those runs; a worker that stops beating has
its runs queued again after the claim timeout.
"""

from __future__ import annotations

import logging
import typing

import attrs
import trio

from actors import Address, messages_or_ticks

from ..errors import AikiError
from ..protocol import Heartbeat
from ._executor import Executing
from ._link import Call, call

logger = logging.getLogger(__name__)


@attrs.define
class Heartbeats:
    """Actor: tells the server every ``interval_seconds`` that this worker is alive."""

    worker_id: str
    link: Address[Call[typing.Any]]
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
            runs = self.executing.snapshot()
            beat = Heartbeat(worker_id=self.worker_id, run_ids=tuple(sorted(runs)))
            sent_at = trio.current_time()
            try:
                with trio.fail_after(self.interval_seconds):
                    ack = await call(self.link, beat)
                self.executing.renew(runs, sent_at, ack)
            except (AikiError, trio.TooSlowError) as exc:  # the link reconnects meanwhile
                logger.debug("heartbeat missed: %s", exc)
