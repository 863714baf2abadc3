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

from ..protocol import MAX_SHARDS
from ._guard import is_loopback
from ._tree import server_tree
from .store import keys

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from transport.postgres import PostgresStore

logger = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8470


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How to run a server.

    Args:
        database_url: PostgreSQL (libpq URL).
        redis_url: Redis: one server (``redis://host:port/db``) or a Redis Cluster
            (``redis+cluster://host:port,host:port``; see
            `transport.redis_streams.parse_redis_url`).
        host: interface to listen on.
        port: TCP port; 0 picks a free one (the URL is reported when listening).
        max_body_bytes: largest accepted request body or WebSocket message.
        max_connections: open HTTP and WebSocket connections at once; one more is answered
            ``503`` with ``Retry-After`` (and never more than open files allow).
        allowed_origins: browser origins (``https://ops.example.com``) that may open a
            WebSocket session besides the server's own; bound to a loopback address, the
            server also answers only requests addressed to a loopback name.
        pool_size: PostgreSQL connections (and concurrent transactions).
        stall_after_seconds: a queued run no worker takes for this long becomes ``stalled``.
        claim_timeout_seconds: a run whose worker sent no heartbeat for this long is released
            and queued again (the old worker is fenced off).
        max_lost_executions: a run whose execution is lost this many times (its worker died
            or was declared dead while running it) fails with `aiki.ExecutionsLostError`
            instead of being queued again.
        redelivery_seconds: a run still queued this long after it was published is
            published again (Redis may have lost it).
        timer_scan_seconds: how often the timers re-read upcoming deadlines from PostgreSQL.
        subscriber_queue: updates a live-update subscriber may fall behind by before its
            queue is dropped for a ``resync`` marker.
        schedule_grace_seconds: a schedule's occurrence reached later than this (server
            down or overloaded) is *missed*; its schedule's catch-up policy decides.
        insecure_no_auth: serve every caller without an API key, with every role (for
            ``aiki dev`` and tests on one machine). Only on a loopback address: elsewhere
            the server refuses to start.
        tls_cert: a PEM certificate (chain) to serve HTTPS and WSS with, on the same port.
        tls_key: its private key (PEM); given with ``tls_cert`` or not at all.
        metrics_host: also serve ``/metrics`` here, without a key (for a scraper on a
            network of its own); None: only on the API's port, with a key.
        metrics_port: the port of that listener.
        reuse_port: listen with ``SO_REUSEPORT``, sharing the port (and the metrics port)
            with other server processes that do the same (``aiki server --processes``).
        stream_shards: sub-streams each queue is split into (1 to 64), so that one hot
            workflow spreads over a Redis Cluster's nodes; workers learn it when they
            register. Every server on one database must use the same number.
    """

    database_url: str
    redis_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = 2 * 1024 * 1024
    max_connections: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    allowed_origins: tuple[str, ...] = ()
    pool_size: int = 10
    stall_after_seconds: float = 300.0
    timer_scan_seconds: float = 15.0
    claim_timeout_seconds: float = 30.0
    max_lost_executions: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    redelivery_seconds: float = 60.0
    subscriber_queue: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    schedule_grace_seconds: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    insecure_no_auth: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_host: str | None = None
    metrics_port: int = 9470
    reuse_port: bool = False
    stream_shards: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_SHARDS)]
    )

    def __attrs_post_init__(self) -> None:
        parse_redis_url(self.redis_url)  # a ValueError naming what is wrong
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
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
