"""The heartbeat: one message per interval for the whole worker, naming the runs it holds.

Each beat refreshes the server-side claims of those runs; a worker that stops beating has
its runs queued again after the claim timeout.
"""

from __future__ import annotations

import logging
import typing
from typing import Final

import attrs
import trio

from actors import Address, messages_or_ticks

from ..errors import AikiError
from ..protocol import Heartbeat
from ._executor import Executing
from ._link import Call, Registered, call

logger = logging.getLogger(__name__)

RENEW_REDIS_SECONDS: Final = 30.0
"""Granted Redis credentials are renewed at least this often."""


@attrs.define
class Heartbeats:
    """Actor: tells the server every ``interval_seconds`` that this worker is alive."""

    worker_id: str
    link: Address[Call[typing.Any]]
    executing: Executing
    interval_seconds: float = 5.0
    registered: Registered | None = None
    """Where the worker's Redis credentials are, if the server grants them: a beat asks
    for new ones every third of their lifetime."""

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Beat until the mailbox closes."""
        task_status.started()
        renewed_at = trio.current_time()
        async for _ in messages_or_ticks(inbox, self.interval_seconds):
            runs = self.executing.snapshot()
            sent_at = trio.current_time()
            renew = self._renewal_due(sent_at - renewed_at)
            beat = Heartbeat(worker_id=self.worker_id, run_ids=tuple(sorted(runs)),
                             renew_redis=renew)  # fmt: skip
            try:
                with trio.fail_after(self.interval_seconds):
                    ack = await call(self.link, beat)
                self.executing.renew(runs, sent_at, ack)
                if renew and self.registered is not None and ack.redis is not None:
                    self.registered.granted(ack.redis)
                    renewed_at = sent_at
            except (AikiError, trio.TooSlowError) as exc:  # the link reconnects meanwhile
                logger.debug("heartbeat missed: %s", exc)

    def _renewal_due(self, since_renewal: float) -> bool:
        """Whether to ask for new Redis credentials now: a third of their lifetime after
        the last ones, and at least every `RENEW_REDIS_SECONDS` (a Redis that restarted
        has forgotten its users: each renewal makes the worker's again)."""
        registered = self.registered
        if registered is None or registered.credentials is None:
            return False
        lifetime = registered.redis_seconds
        return lifetime is not None and since_renewal >= min(lifetime / 3, RENEW_REDIS_SECONDS)
