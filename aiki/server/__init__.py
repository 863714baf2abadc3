"""The Aiki server process: a supervision tree over PostgreSQL and Redis.

::

    server (one_for_one)
    ├── committer    group commit: concurrent transactions share one COMMIT
    ├── broadcaster  committed run changes → WebSocket subscribers
    ├── dispatcher   outbox → Redis Streams
    ├── timers       sleeps, wait timeouts, retries, delayed starts, run deadlines, stalls
    ├── scheduler    schedules' occurrences (the timers' machinery, a heap of its own)
    ├── sweeper      stale claims and silent workers → runs queued again (recovery)
    └── api          HTTP + WebSocket on one port (hypercorn, trio)

The server owns all state in PostgreSQL and never imports or runs user code: what it
knows of workflows (names, versions, input schemas) it learns from workers.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from actors import (
    ChildSpec,
    Mailbox,
    RestartIntensity,
    Startable,
    open_supervisor,
)
from transport import (
    Migration,
    PostgresStore,
    apply_migrations,
    load_migrations,
    open_postgres_store,
    open_redis_streams,
)

from ._api import Api, Listening, build_app
from ._broadcaster import Broadcaster, Poke
from ._broadcaster import poke as poke_broadcaster
from ._committer import Committer, committer_mailbox
from ._dispatcher import Dispatcher, Wake, poke
from ._scheduler import fire_schedules
from ._schedules import ScheduleOperations
from ._store_schedules import upcoming as upcoming_schedules
from ._sweeper import Sweeper
from ._timers import Deadline, Fired, Timers, schedule

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._store_waits import Stopped

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8470


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How to run a server.

    Args:
        database_url: PostgreSQL (libpq URL).
        redis_url: Redis (``redis://host:port/db``).
        host: interface to listen on.
        port: TCP port; 0 picks a free one (the URL is reported when listening).
        max_body_bytes: largest accepted request body or WebSocket frame.
        pool_size: PostgreSQL connections (and concurrent transactions).
        stall_after_seconds: a queued run no worker takes for this long becomes ``stalled``.
        claim_timeout_seconds: a run whose worker sent no heartbeat for this long is released
            and queued again (the old worker is fenced off).
        redelivery_seconds: a run still queued this long after it was published is
            published again (Redis may have lost it).
        timer_scan_seconds: how often the timers re-read upcoming deadlines from PostgreSQL.
        subscriber_queue: updates a live-update subscriber may fall behind by before its
            queue is dropped for a ``resync`` marker.
        schedule_grace_seconds: a schedule's occurrence reached later than this (server
            down or overloaded) is *missed*; its schedule's catch-up policy decides.
    """

    database_url: str
    redis_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = 2 * 1024 * 1024
    pool_size: int = 10
    stall_after_seconds: float = 300.0
    timer_scan_seconds: float = 15.0
    claim_timeout_seconds: float = 30.0
    redelivery_seconds: float = 60.0
    subscriber_queue: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    schedule_grace_seconds: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


def migrations() -> list[Migration]:
    """The server's schema migrations, in order."""
    return load_migrations(importlib.resources.files(__name__) / "migrations")


async def serve(
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a server until ``shutdown_trigger`` returns, then shut down gracefully.

    Reports the API's URL through ``task_status`` once it listens.

    Raises:
        transport.StorageUnavailableError: PostgreSQL could not be reached at start.
        transport.StreamUnavailableError: Redis could not be reached at start.
        actors.RestartIntensityExceeded: (in an ExceptionGroup) the tree gave up.
    """
    async with (
        # A short checkout wait: during an outage, requests fail fast with a retryable 503.
        open_postgres_store(
            config.database_url, max_size=config.pool_size, connect_timeout_seconds=2.0
        ) as store,
        open_redis_streams(config.redis_url) as streams,
    ):
        await streams.ping()
        await apply_migrations(store, migrations())
        dispatcher_box = Mailbox[Wake]("dispatcher", capacity=1)
        committer_box = committer_mailbox()
        broadcaster_box = Mailbox[Poke]("broadcaster", capacity=1)
        broadcaster = Broadcaster(store, queue_limit=config.subscriber_queue,
                                  committer=committer_box.address)  # fmt: skip
        timers_box = Mailbox[Deadline]("timers", capacity=1024)
        scheduler_box = Mailbox[Deadline]("scheduler", capacity=1024)
        ops = ScheduleOperations(
            store,
            on_queued=functools.partial(poke, dispatcher_box.address),
            on_deadline=functools.partial(schedule, timers_box.address),
            on_schedule_due=functools.partial(schedule, scheduler_box.address),
            lease_seconds=config.claim_timeout_seconds,
            committer=committer_box.address,
        )
        ops.notifier.on_change = functools.partial(poke_broadcaster, broadcaster_box.address)
        await ops.load_registry()
        listening = Listening()
        app = build_app(ops, max_body_bytes=config.max_body_bytes,
                        health_checks=(store_check(store), streams.ping),
                        broadcaster=broadcaster, listening=listening)  # fmt: skip

        async def timed_out(stopped: list[Stopped]) -> None:
            ops.metrics.runs_timed_out.inc(len(stopped))
            await ops.stop_all(stopped, "timed out")

        def timers() -> Timers:
            return Timers(
                store, functools.partial(poke, dispatcher_box.address), timed_out,
                scan_seconds=config.timer_scan_seconds,
                stall_after_seconds=config.stall_after_seconds,
            )  # fmt: skip

        def scheduled(fired: Fired) -> None:
            occurrences = ops.metrics.schedule_occurrences
            occurrences.labels("started").inc(len(fired.started))
            occurrences.labels("skipped").inc(fired.skipped)
            for run in fired.started:
                ops.after_start(run)
            ops.notifier.on_change()

        async def cancelled(stopped: list[Stopped]) -> None:
            ops.metrics.runs_cancelled.inc(len(stopped))
            await ops.stop_all(stopped, "cancelled")

        def scheduler() -> Timers:
            return Timers(
                store, functools.partial(poke, dispatcher_box.address), cancelled,
                on_started=scheduled, stall_after_seconds=None,
                fire_batch=functools.partial(
                    fire_schedules, grace_seconds=config.schedule_grace_seconds),
                upcoming=upcoming_schedules, scan_seconds=config.timer_scan_seconds,
            )  # fmt: skip

        children: list[Startable] = [
            # First: started before, and stopped after, everything that commits through it.
            ChildSpec(name="committer", mailbox=committer_box, factory=lambda: Committer(store)),
            ChildSpec(name="broadcaster", mailbox=broadcaster_box, factory=lambda: broadcaster),
            ChildSpec(name="dispatcher", mailbox=dispatcher_box, factory=lambda: Dispatcher(
                store, streams, redelivery_seconds=config.redelivery_seconds)),
            ChildSpec(name="sweeper", factory=lambda: Sweeper(
                store, functools.partial(poke, dispatcher_box.address),
                claim_timeout_seconds=config.claim_timeout_seconds,
                worker_timeout_seconds=config.claim_timeout_seconds,
                on_released=ops.metrics.claim_recoveries.inc)),
            ChildSpec(name="timers", factory=timers, mailbox=timers_box),
            ChildSpec(name="scheduler", factory=scheduler, mailbox=scheduler_box),
            ChildSpec(name="api", factory=lambda: Api(app, config.host, config.port, listening)),
        ]  # fmt: skip
        async with open_supervisor(
            "server", children, intensity=RestartIntensity(max_restarts=5, within_seconds=30)
        ) as tree:
            ops.metrics.actor_restarts.read = tree.statistics_nowait
            listening.ready = True
            task_status.started(listening.urls[0])
            await shutdown_trigger()
            listening.ready = False
            logger.info("server shutting down")


def store_check(store: PostgresStore) -> Callable[[], Awaitable[None]]:
    """A health check that runs ``SELECT 1``."""

    async def postgres() -> None:
        await store.fetch_one("SELECT 1")

    return postgres


__all__ = ["DEFAULT_PORT", "ServerConfig", "migrations", "serve"]
