"""The Aiki server process: a supervision tree over PostgreSQL and Redis.

`serve` runs the tree wired in `aiki.server._tree` (committer, broadcaster, dispatcher,
sweeper, timers, scheduler, api). The server owns all state in PostgreSQL and never
imports or runs user code: what it knows of workflows (names, versions, input schemas)
it learns from workers.

Inside: `operations` (one handler per operation, by domain), `store` (the SQL, by
concept), the carriers (`_http`, `_sessions`) and the actors.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from actors import RestartIntensity, open_supervisor
from transport.migrations import Migration, apply_migrations, load_migrations
from transport.postgres import open_postgres_store
from transport.redis_streams import open_redis_streams, parse_redis_url

from .._settings import setting
from ..protocol import MAX_SHARDS
from ._guard import is_loopback
from ._tree import server_tree
from .store import keys

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from transport.postgres import PostgresStore
    from transport.redis_streams import RedisStreams

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8470


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How to run a server: each field's declaration says what it does, its default and
    bounds, and its ``aiki server`` option and environment variable (``aiki server
    --help``; ``docs/configuration.md``).

    Raises:
        ValueError: a value out of its bounds, a Redis URL that is not one, half of a TLS
            pair, or ``insecure_no_auth`` on an address that is not loopback.
    """

    database_url: str = setting(help="PostgreSQL (a libpq URL).")
    redis_url: str = setting(
        help="Redis: one server (redis://host:port/db) or a Redis Cluster's seed nodes "
        "(redis+cluster://host:port,host:port)."
    )
    host: str = setting("127.0.0.1", help="The interface to listen on.")
    port: int = setting(DEFAULT_PORT, ge=0, le=65535,
                        help="The TCP port; 0 picks a free one (the URL is reported).")  # fmt: skip
    max_body_bytes: int = setting(
        2 * 1024 * 1024, ge=1, help="The largest request body or WebSocket message accepted."
    )
    max_connections: int = setting(
        1000, ge=1, help="Open HTTP and WebSocket connections at once (never more than open "
        "files allow); one more closes the oldest idle one without a valid key, or, when "
        "every one has presented a key, is answered 503 with Retry-After.",
    )  # fmt: skip
    max_unauthenticated_connections: int = setting(
        250, ge=1, help="Connections that have not presented a valid key yet, at once (their "
        "share of --max-connections); one more closes the oldest idle one of them, so keyless "
        "connections never lock out clients and workers that hold keys.",
    )  # fmt: skip
    max_unauthenticated_per_address: int = setting(
        100, ge=1, help="The same, from one peer address (an IPv6 peer's /64). Behind a "
        "proxy, every connection is the proxy's.",
    )  # fmt: skip
    head_timeout_seconds: float = setting(
        10.0, gt=0, option="--head-timeout",
        help="Seconds a connection without a valid key yet may take to send a request's "
        "head (from its start or its previous request's end) before it is closed.",
    )  # fmt: skip
    key_requests_per_second: float = setting(
        2400.0, ge=0, help="Requests each API key may make a second, on average, on this "
        "server (HTTP operations, session upgrades and each request over a session); more "
        "get 429 with Retry-After (aiki.RateLimitedError, which clients and workers retry). "
        "0: no quota.",
    )  # fmt: skip
    key_request_burst: int = setting(
        2400, ge=1, help="Requests each API key may make at once, above its rate (the "
        "quota's bucket).",
    )  # fmt: skip
    wrong_keys_per_second: float = setting(
        5.0, ge=0, help="Keys that are not valid one peer address may present a second, on "
        "average (bursts of --wrong-key-burst); past that its requests with keys get 429 with "
        "Retry-After, unlooked-up, until it slows down (keys it holds that are valid and "
        "recently used still pass). 0: no limit.",
    )  # fmt: skip
    wrong_key_burst: int = setting(
        100, ge=1, help="Keys that are not valid one peer address may present at once.",
    )  # fmt: skip
    allowed_origins: tuple[str, ...] = setting(
        (), option="--allowed-origin",
        help="A browser origin (https://ops.example.com) that may open WebSocket sessions "
        "and send POST requests besides the server's own (repeatable; the variable takes "
        "several, space-separated). "
        "On a loopback address the server also answers only requests to a loopback name.",
    )  # fmt: skip
    pool_size: int = setting(10, ge=1, help="PostgreSQL connections (concurrent transactions).")
    stall_after_seconds: float = setting(
        300.0, gt=0, option="--stall-after",
        help="Seconds a queued run may go untaken by any worker before it is marked stalled.",
    )  # fmt: skip
    timer_scan_seconds: float = setting(
        15.0, gt=0, help="Seconds between the timers' scans of upcoming deadlines."
    )
    claim_timeout_seconds: float = setting(
        30.0, gt=0, help="Seconds without a heartbeat before a worker's runs are released and "
        "queued again (the old worker is fenced off).",
    )  # fmt: skip
    max_lost_executions: int = setting(
        5, ge=1, help="Fail a run (ExecutionsLostError) once its worker died or was declared "
        "dead this many times while running it, instead of queueing it again.",
    )  # fmt: skip
    max_events_per_run: int = setting(
        10_000, ge=1, help="Events a run takes at most (duplicates aside); a new one past it "
        "is refused (409), so no sender can grow one run's history without end.",
    )  # fmt: skip
    redelivery_seconds: float = setting(
        60.0, gt=0, option="--redelivery-timeout",
        help="Seconds a published run may stay queued before it is published again (Redis "
        "may have lost it).",
    )  # fmt: skip
    dispatch_ahead: int = setting(
        4, ge=0, help="Runs kept in flight to a queue's workers, per live worker, beyond what "
        "their free slots take at once (and at most as many for the free slots): the rest "
        "wait at the gate, where priority and fair shares order them. More keeps workers "
        "busier between the gate's passes; fewer lets a run of a higher priority overtake "
        "sooner.",
    )  # fmt: skip
    subscriber_queue: int = setting(
        1024, ge=1, help="Updates a live-update subscriber may fall behind by before its "
        "queue is dropped for a resync marker.",
    )  # fmt: skip
    schedule_grace_seconds: float = setting(
        60.0, ge=0, help="Seconds late after which a schedule's occurrence counts as missed "
        "(server down or overloaded); its catch-up policy decides.",
    )  # fmt: skip
    insecure_no_auth: bool = setting(
        False, variable=False,
        help="Serve every caller without an API key, with every role (for aiki dev and "
        "tests on one machine); refused on an address that is not loopback, and only an "
        "option, never a variable.",
    )  # fmt: skip
    tls_cert: str | None = setting(
        None, existing_file=True,
        help="A PEM certificate (chain): serve HTTPS and WSS on the port (with --tls-key).",
    )  # fmt: skip
    tls_key: str | None = setting(
        None, existing_file=True, help="The certificate's private key (PEM)."
    )
    tls_client_ca: str | None = setting(
        None, existing_file=True,
        help="Mutual TLS: a CA certificate (PEM); every client must present a certificate "
        "it signed, or the handshake fails. A certificate whose subject names a role "
        "(OU=viewer|client|worker|admin) and a namespace (O=<namespace>; O=* for an admin "
        "of every namespace) acts as that role there without an API key.",
    )  # fmt: skip
    metrics_host: str | None = setting(
        None, help="Also serve /metrics without a key on this address (a scraper's own "
        "network); unset: only on the API's port, with a key.",
    )  # fmt: skip
    metrics_port: int = setting(9470, ge=0, le=65535, help="The port of --metrics-host.")
    reuse_port: bool = setting(
        False, cli=False, help="Listen with SO_REUSEPORT, sharing the port (and the metrics "
        "port) with other server processes that do the same (aiki server --processes).",
    )  # fmt: skip
    worker_redis_url: str | None = setting(
        None, help="Where workers given no Redis URL of their own find Redis, with the "
        "credentials this server grants each one (its namespace's streams only); unset: the "
        "server's own Redis URL without its user and password.",
    )  # fmt: skip
    redis_grant_seconds: float = setting(
        600.0, ge=5, le=86_400, help="How long the Redis credentials a worker is granted "
        "last without a renewal (workers renew them at a third of it); a worker gone that "
        "long has its Redis user deleted and its connections closed.",
    )  # fmt: skip
    stream_shards: int = setting(
        1, ge=1, le=MAX_SHARDS,
        help="Redis sub-streams per queue, so one hot workflow spreads over a Redis "
        "Cluster's nodes; workers learn it when they register. The same on every server.",
    )  # fmt: skip

    def __attrs_post_init__(self) -> None:
        parse_redis_url(self.redis_url)  # a ValueError naming what is wrong
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs TLS: --tls-cert and --tls-key")
        if self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(
                f"--insecure-no-auth serves anyone who reaches the port with every role: "
                f"it is refused on {self.host}, which is not a loopback address"
            )


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
        await _say_how_secure(config, store)
        tree = server_tree(config, store, streams)
        if tree.services.redis_grants is not None:
            tree.services.redis_grants.unavailable = await _redis_users(streams)
        await tree.services.load_schemas()
        async with open_supervisor(
            "server", tree.children, intensity=RestartIntensity(max_restarts=5, within_seconds=30)
        ) as supervisor:
            tree.services.metrics.actor_restarts.read = supervisor.statistics_nowait
            tree.listening.ready = True
            task_status.started(tree.listening.urls[0])
            await shutdown_trigger()
            tree.listening.ready = False
            logger.info("server shutting down")


async def _redis_users(streams: RedisStreams) -> str | None:
    """Whether this server can grant workers Redis users (`_redis_grants`); if not, say
    so, and why."""
    why = await streams.user_management()
    if why is not None:
        logger.warning(
            "Redis cannot keep namespaces apart here (%s): workers need a Redis URL of their "
            "own, and every worker reaches every namespace's queues; give the server a Redis "
            "user allowed to manage users (ACL, Redis 6 or later) to grant each worker its "
            "namespace's streams only", why,
        )  # fmt: skip
    return why


BOOTSTRAP_HINT: Final = (
    "no admin API key exists yet: create the first one with `aiki keys create --bootstrap "
    "--role admin --name NAME` (it writes to the database at AIKI_DATABASE_URL and prints "
    "the key once)"
)


async def _say_how_secure(config: ServerConfig, store: PostgresStore) -> None:
    """Warn about what is open: no authentication, no admin key yet, no TLS."""
    if config.insecure_no_auth:
        logger.warning("authentication is OFF (--insecure-no-auth): anyone who can reach "
                       "%s may start, read and cancel every run", config.host)  # fmt: skip
    elif not await store.transact(keys.admin_exists):
        logger.warning(BOOTSTRAP_HINT)
    if not is_loopback(config.host) and config.tls_cert is None:
        logger.warning(
            "listening on %s without TLS: API keys, run inputs and outputs cross the network "
            "in clear text, readable and alterable by anyone on the path; give --tls-cert "
            "and --tls-key (or serve it behind a TLS-terminating proxy)",
            config.host,
        )


__all__ = ["DEFAULT_PORT", "ServerConfig", "migrations", "serve"]
