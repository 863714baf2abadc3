"""The claim sweeper and heartbeat monitor.

Every ``interval``: runs whose claim was not refreshed within the claim timeout are
released and queued again (``recovery``), and workers silent for longer than the worker
timeout are marked dead, releasing every run they held. The revision bump of each release
fences the old owner: a worker that was only frozen gets a conflict on its next write.
A run whose execution is lost ``max_lost_executions`` times (its worker keeps dying or being
declared dead while running it: a task that crashes the process or blocks its event loop)
fails with `aiki.ExecutionsLostError` instead of being queued again.

Every `VERSIONS_EVERY_SECONDS` (or worker timeout, if shorter) it also looks for workflow
versions with open runs that no live worker has served for longer than the worker
timeout (runs stay on the version they started on: a version must be served until they
end), and warns of each once.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import orjson
import trio

from actors import Address, messages_or_ticks
from transport.postgres import PostgresStore, Transaction

from ..errors import ErrorInfo
from ..wire import make_wire_converter
from . import store
from ._outages import Outage
from .delivery import Wake, poke
from .store.recovery import LOST, LostBound
from .store.waits import Stopped

logger = logging.getLogger(__name__)

BATCH: Final = 1000
VERSIONS_EVERY_SECONDS: Final = 30.0
"""How often the sweeper looks for versions no live worker serves."""
_CONVERT: Final = make_wire_converter()


def lost_bound(max_lost: int) -> LostBound:
    """The bound and the error a run fails with once its execution is lost ``max_lost``
    times."""
    error = ErrorInfo(
        type="aiki.errors.ExecutionsLostError", code="executions_lost", non_retryable=True,
        message=(
            f"the run's execution was lost {max_lost} times: its worker died or was declared "
            "dead (no heartbeat) each time while running it. A task that crashes its worker "
            "process, runs it out of memory, or blocks its event loop (blocking code in an "
            "async def task: make it a plain def task) does this; see the workers' logs"
        ),
    )  # fmt: skip
    return LostBound(max_lost, orjson.dumps(_CONVERT.unstructure(error)).decode())


async def _nobody_told(_runs: list[Stopped]) -> None:
    return None


@attrs.define
class Sweeper:
    """Actor: stale claims and dead workers → runs queued again."""

    store: PostgresStore
    dispatcher: Address[Wake]
    """Poked when runs were queued again."""
    claim_timeout_seconds: float = 30.0
    worker_timeout_seconds: float = 30.0
    max_lost_executions: int = 5
    on_failed: Callable[[list[Stopped]], Awaitable[None]] = _nobody_told
    """Told the runs failed (and their descendants cancelled) for lost executions."""
    on_released: Callable[[int], None] = lambda _count: None
    """Called with how many runs a sweep queued again (metrics)."""
    _unserved: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    _versions_at: float = attrs.field(default=-math.inf, init=False)

    @property
    def interval_seconds(self) -> float:
        """A quarter of the claim timeout: recovery within timeout + interval."""
        return max(0.1, min(self.claim_timeout_seconds, self.worker_timeout_seconds) / 4)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep until the mailbox closes."""
        outage = Outage("claim sweeper")
        task_status.started()
        async for _ in messages_or_ticks(inbox, self.interval_seconds):
            await outage.guard(self.sweep)
            every = min(VERSIONS_EVERY_SECONDS, self.worker_timeout_seconds)
            if trio.current_time() - self._versions_at >= every:
                self._versions_at = trio.current_time()
                await outage.guard(self.watch_versions)

    async def watch_versions(self) -> list[tuple[str, str, str]]:
        """Warn (once each) of versions whose open runs no live worker has served for
        longer than the worker timeout; say when one is served again. Returns those
        unserved now, as (namespace, workflow, version)."""
        found = await self.store.transact(store.views.unserved_versions)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.worker_timeout_seconds)
        unserved = {(v.namespace, v.workflow, v.version): v for v in found
                     if v.unserved_since is not None and v.unserved_since < since}  # fmt: skip
        for key, version in unserved.items():
            if key not in self._unserved:
                assert version.unserved_since is not None
                logger.warning(
                    "%d open runs of %s@%s (namespace %s) wait: no live worker has served "
                    "that version since %s; start a worker that registers it (runs stay on "
                    "the version they started on)", sum(version.open_runs.values()),
                    version.workflow, version.version, version.namespace,
                    version.unserved_since.isoformat(timespec="seconds"),
                )  # fmt: skip
        for namespace, workflow, version_ in self._unserved - unserved.keys():
            logger.info("%s@%s (namespace %s) is served again, or has no open runs", workflow,
                        version_, namespace)  # fmt: skip
        self._unserved = set(unserved)
        return sorted(unserved)

    async def sweep(self) -> int:
        """Release stale claims and dead workers' runs; return how many runs were released."""

        bound = lost_bound(self.max_lost_executions)

        def sweep(
            tx: Transaction,
        ) -> tuple[list[tuple[str, str | None]], list[str], list[Stopped]]:
            released, failed = store.recovery.release_stale_claims(
                tx, self.claim_timeout_seconds, BATCH, bound
            )
            dead, failed_dead = store.recovery.mark_dead_workers(
                tx, self.worker_timeout_seconds, BATCH, bound
            )
            return released, dead, failed + failed_dead

        released, dead, failed = await self.store.transact(sweep)
        for run in failed:
            if run.reason == LOST:
                logger.error("run %s failed: its execution was lost %d times (last on worker %s)",
                             run.run_id, self.max_lost_executions, run.worker_id,
                             extra={"run_id": run.run_id, "worker_id": run.worker_id})  # fmt: skip
        if failed:
            await self.on_failed(failed)
        for worker in dead:
            logger.warning("worker %s missed its heartbeats: marked dead, its runs released",
                           worker, extra={"worker_id": worker})  # fmt: skip
        for run_id, holder in released:
            logger.warning("run %s: claim of worker %s went stale; queued again", run_id, holder,
                           extra={"run_id": run_id, "worker_id": holder})  # fmt: skip
        if released:
            self.on_released(len(released))
        if released or dead:
            poke(self.dispatcher)
        return len(released)
