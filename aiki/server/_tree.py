"""The server's supervision tree, wired in one place.

::

    server (one_for_one)
    ├── committer    group commit: concurrent transactions share one COMMIT
    ├── broadcaster  committed run changes → WebSocket subscribers
    ├── dispatcher   outbox → Redis Streams; re-publishes what Redis lost
    ├── sweeper      the heartbeat monitor and claim sweeper: silent workers and stale
    │                claims → runs queued again (the revision bump fences the old owner)
    ├── timers       sleeps, wait timeouts, retries, delayed starts, run deadlines, stalls
    ├── scheduler    schedules' occurrences (the timers' machinery, a heap of its own)
    └── api          HTTP + WebSocket sessions on one port (hypercorn, trio); each
                     session serves one connection in a nursery of its own

Every mailbox is made first, so each actor is built knowing the addresses it sends to;
each child's factory builds a fresh actor on every (re)start. What outlives an actor's
restarts is a table the tree owns and hands in: the live subscriptions (with the
broadcaster's read position), the registered schemas and the worker sessions
(`operations.Services`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs

from actors import ChildSpec, Mailbox, Startable
from transport.asgi import ServerLimits, ServerStatistics
from transport.tls import server_tls

from ._auth import Authentication, Authenticator, lookup_in, sign_ins_in
from ._broadcaster import Broadcaster, Poke, Subscriptions
from ._committer import Committer, committer_mailbox
from ._guard import BrowserGuard, is_loopback
from ._http import COOKIE_SECONDS, Api, Listening, build_app, build_metrics_app
from ._metrics import ServerMetrics
from ._quotas import KeyQuotas, Quotas
from ._redis_grants import GrantSweeper, RedisGrants, without_credentials
from ._scheduler import fire_schedules
from ._sweeper import Sweeper
from ._timers import Deadline, Fired, Timers
from .delivery import Dispatcher, Gate, Open, Wake
from .operations import RunNotifier, Services, Wakeups
from .store.schedules import upcoming as upcoming_schedules

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import Counter

    from transport.postgres import PostgresStore
    from transport.redis_streams import RedisStreams

    from . import ServerConfig
    from .store.waits import Stopped


def _stopper(
    services: Services, reason: str, counter: Counter
) -> Callable[[list[Stopped]], Awaitable[None]]:
    """Counts the runs a firing stopped and tells their workers."""

    async def stopped(runs: list[Stopped]) -> None:
        counter.inc(len(runs))
        services.stop_all(runs, reason)

    return stopped


def _fired_schedules(services: Services, fired: Fired) -> None:
    occurrences = services.metrics.schedule_occurrences
    occurrences.labels("started").inc(len(fired.started))
    occurrences.labels("skipped").inc(fired.skipped)
    for run in fired.started:
        services.after_start(run)
    services.notifier.changed()


@attrs.define
class ServerTree:
    """The server's services and the specs of its children (see the module docstring)."""

    services: Services
    listening: Listening
    children: list[Startable]


def server_tree(config: ServerConfig, store: PostgresStore, streams: RedisStreams) -> ServerTree:
    """Wire the server's tree: mailboxes, shared tables, and one spec per child."""
    committer = committer_mailbox()
    broadcaster = Mailbox[Poke]("broadcaster", capacity=1)
    dispatcher = Mailbox[Wake]("dispatcher", capacity=1)
    gate = Mailbox[Open]("gate", capacity=1)
    timers = Mailbox[Deadline]("timers", capacity=1024)
    scheduler = Mailbox[Deadline]("scheduler", capacity=1024)
    subscriptions = Subscriptions(committer.address, queue_limit=config.subscriber_queue)
    metrics = ServerMetrics()
    over_quota = metrics.requests_over_quota
    grants = RedisGrants(
        streams,
        config.worker_redis_url or without_credentials(config.redis_url),
        config.redis_grant_seconds,
        unavailable="not checked yet",
    )
    services = Services(
        store=store,
        committer=committer.address,
        metrics=metrics,
        wakeups=Wakeups(dispatcher.address, timers.address, scheduler.address, gate.address),
        notifier=RunNotifier(broadcaster.address),
        subscriptions=subscriptions,
        lease_seconds=config.claim_timeout_seconds,
        max_events_per_run=config.max_events_per_run,
        stream_shards=config.stream_shards,
        authenticator=None if config.insecure_no_auth else Authenticator(lookup_in(store)),
        redis_grants=grants,
        quotas=KeyQuotas(
            Quotas(config.key_requests_per_second, config.key_request_burst),
            lambda namespace: over_quota.labels(namespace).inc(),
        ),
    )
    metrics.offers_open.set_function(services.offers.open)
    listening = Listening()
    tls = (
        None
        if config.tls_cert is None
        else server_tls(config.tls_cert, str(config.tls_key), config.tls_client_ca)
    )
    limits = ServerLimits(max_connections=config.max_connections,
                          max_unadmitted=config.max_unauthenticated_connections,
                          max_unadmitted_per_address=config.max_unauthenticated_per_address,
                          head_seconds=config.head_timeout_seconds,
                          max_message_bytes=config.max_body_bytes)  # fmt: skip
    app = BrowserGuard(
        Authentication(
            build_app(
                services,
                max_body_bytes=config.max_body_bytes,
                health_checks=(store_check(store), streams.ping),
                listening=listening,
                sign_ins=None
                if config.insecure_no_auth
                else sign_ins_in(store, seconds=COOKIE_SECONDS),
            ),
            services.authenticator,
            services.quotas,
            Quotas(config.wrong_keys_per_second, config.wrong_key_burst),
        ),
        loopback_only=is_loopback(config.host),
        allowed_origins=frozenset(config.allowed_origins),
    )
    children: list[Startable] = [
        # First: started before, and stopped after, everything that commits through it.
        ChildSpec(name="committer", mailbox=committer, factory=lambda: Committer(store)),
        ChildSpec(name="broadcaster", mailbox=broadcaster,
                  factory=lambda: Broadcaster(subscriptions)),
        ChildSpec(name="dispatcher", mailbox=dispatcher, factory=lambda: Dispatcher(
            store, streams, redelivery_seconds=config.redelivery_seconds,
            lane=services.wakeups.lane, shards=config.stream_shards)),
        ChildSpec(name="gate", mailbox=gate, factory=lambda: Gate(
            store, services.wakeups.lane, dispatcher.address, services.wakeups.room,
            services.offers, live_seconds=config.claim_timeout_seconds,
            ahead=config.dispatch_ahead)),
        ChildSpec(name="sweeper", factory=lambda: Sweeper(
            store, dispatcher.address,
            claim_timeout_seconds=config.claim_timeout_seconds,
            worker_timeout_seconds=config.claim_timeout_seconds,
            max_lost_executions=config.max_lost_executions,
            on_failed=_stopper(services, "executions lost", metrics.runs_executions_lost),
            on_released=metrics.claim_recoveries.inc)),
        ChildSpec(name="redis grants", factory=lambda: GrantSweeper(grants)),
        ChildSpec(name="timers", mailbox=timers, factory=lambda: Timers(
            store, dispatcher.address,
            _stopper(services, "timed out", metrics.runs_timed_out),
            scan_seconds=config.timer_scan_seconds,
            stall_after_seconds=config.stall_after_seconds)),
        ChildSpec(name="scheduler", mailbox=scheduler, factory=lambda: Timers(
            store, dispatcher.address,
            _stopper(services, "cancelled", metrics.runs_cancelled),
            on_started=functools.partial(_fired_schedules, services),
            stall_after_seconds=None,
            fire_batch=functools.partial(fire_schedules,
                                         grace_seconds=config.schedule_grace_seconds),
            upcoming=upcoming_schedules, scan_seconds=config.timer_scan_seconds)),
        ChildSpec(name="api", factory=lambda: Api(
            app, config.host, config.port, listening, limits, services.metrics.connections,
            tls, reuse_port=config.reuse_port)),
    ]  # fmt: skip
    if config.metrics_host is not None:
        metrics_app = build_metrics_app(services)
        metrics_host, metrics_port = config.metrics_host, config.metrics_port
        children.append(ChildSpec(name="metrics", factory=lambda: Api(
            metrics_app, metrics_host, metrics_port, Listening(), ServerLimits(max_connections=64),
            ServerStatistics(), name="metrics", reuse_port=config.reuse_port)))  # fmt: skip
    return ServerTree(services, listening, children)


def store_check(store: PostgresStore) -> Callable[[], Awaitable[None]]:
    """A health check that runs ``SELECT 1``."""

    async def postgres() -> None:
        await store.fetch_one("SELECT 1")

    return postgres
