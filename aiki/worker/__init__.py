"""The Aiki worker process: runs your workflows in your infrastructure.

::

    worker (one_for_one: a reconnecting link does not disturb runs in progress)
    ├── link         WebSocket session to the server (reconnects, re-registers)
    ├── runs         a pool of run actors (``concurrency``), one run each at a time
    ├── heartbeat    one beat per interval for the whole worker (refreshes its claims)
    ├── claimer      the worker's claim sweeper: XAUTOCLAIM of entries idle too long
    │                (their consumer died) → the subscriber
    └── subscriber   hands out work for exactly the free run slots, which run actors
                     report as messages: XREADGROUP on the registered versions' streams

The table of runs in progress (`Executing`: the heartbeat, the claimer and the server's
pushes read it; the subscriber alone counts its free slots) belongs to the tree and
outlives the restarts of the actors that use it.

Define what a worker serves in your code and start it with ``aiki worker module:name``::

    worker = aiki.Worker(process_order, concurrency=16)

Shutdown (SIGTERM / SIGINT) stops taking work first, lets runs in progress finish for up
to ``shutdown_grace_seconds``, and gives back to the server any run still going then.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import secrets
import socket
import typing
import uuid

import attrs
import trio

from actors import ChildSpec, Mailbox, RestartIntensity, Startable, open_supervisor, pool
from transport import StreamUnavailableError
from transport.redis_streams import (
    RedisCredentials,
    RedisStreams,
    open_redis_streams,
    parse_redis_url,
)

from .._settings import setting
from ..client import (
    API_KEY_ENV,
    CA_FILE_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    Client,
    Servers,
    parse_server_urls,
    tls_for,
)
from ..errors import AikiError, UnavailableError
from ..protocol import DEFAULT_NAMESPACE, RedisGrant, RegisterWorker, ServedQueue, streams_for
from ..sdk import (
    Workflow,
    WorkflowVersion,
    deterministic_scheduling,
    open_asyncio_loop,
    watching_trio,
)
from ._claimer import Claimer
from ._executor import Executing, RunActor
from ._heartbeat import Heartbeats
from ._link import RECONNECT, Call, Link, Registered
from ._messages import SubscriberMsg
from ._subscriber import Subscriber, mailbox_capacity

if typing.TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Iterable

logger = logging.getLogger(__name__)


class Worker:
    """The workflow versions one worker process serves, and how many runs at once.

    Args:
        definitions: workflow versions, or whole workflows (all their versions).
        concurrency: runs executed at once (each in its own run actor).
        pools: the pools served; None is the default pool (runs started without one).

    Raises:
        ValueError: nothing to serve, or the same version given twice.
    """

    def __init__(
        self,
        *definitions: WorkflowVersion[typing.Any, typing.Any] | Workflow,
        concurrency: int = 16,
        pools: Iterable[str | None] = (None,),
    ) -> None:
        versions: dict[tuple[str, str], WorkflowVersion[typing.Any, typing.Any]] = {}
        for definition in definitions:
            for version in (
                definition.versions.values() if isinstance(definition, Workflow) else [definition]
            ):
                key = (version.workflow, version.version)
                if key in versions:
                    raise ValueError(f"{version.workflow}@{version.version} is given twice")
                versions[key] = version
        if not versions:
            raise ValueError("a worker needs at least one workflow version to serve")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.versions = versions
        self.concurrency = concurrency
        self.pools = tuple(pools)

    def queues(self) -> tuple[ServedQueue, ...]:
        """The queues this worker serves (each version in each pool)."""
        return tuple(
            ServedQueue(workflow=workflow, version=version, pool=pool)
            for (workflow, version) in self.versions
            for pool in self.pools
        )

    def streams(self, namespace: str = DEFAULT_NAMESPACE, shards: int = 1) -> tuple[str, ...]:
        """The Redis streams this worker reads (in ``namespace``: its key's; each queue
        split into ``shards`` sub-streams, as the server says)."""
        return tuple(
            stream
            for (workflow, version) in self.versions
            for pool in self.pools
            for stream in streams_for(namespace, workflow, version, pool, shards=shards)
        )


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Where the server and Redis are, and tuning: each field's declaration says what it
    does, its default and bounds, and its ``aiki worker`` option and environment variable
    (``aiki worker --help``; ``docs/configuration.md``).

    Raises:
        ValueError: a value out of its bounds, or a server or Redis URL that is not one.
    """

    server_url: str = setting(
        "http://127.0.0.1:8470",
        help="The server, or several comma-separated: the worker uses one at a time and "
        "moves on to the next when it goes away.",
    )  # fmt: skip
    redis_url: str | None = setting(
        None, help="The Redis the server publishes runs to: one server (redis://host:port/db) "
        "or a Redis Cluster's seed nodes (redis+cluster://host:port,host:port); unset: the "
        "server grants the worker a Redis user of its own, which reaches its namespace's "
        "streams only (and renews it while the worker lives).",
    )  # fmt: skip
    worker_id: str = setting(
        factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        help="Unique per process (default: host, process ID and a random suffix).",
    )  # fmt: skip
    heartbeat_seconds: float = setting(
        5.0, gt=0, help="Seconds between heartbeats (keep well under the server's "
        "--claim-timeout).",
    )  # fmt: skip
    claim_idle_seconds: float = setting(
        60.0, gt=0, help="Seconds a stream entry may stay unacknowledged before this worker "
        "takes it over.",
    )  # fmt: skip
    shutdown_grace_seconds: float = setting(
        30.0, ge=0, help="Seconds runs in progress may take to finish on shutdown."
    )
    call_timeout_seconds: float = setting(
        30.0, gt=0, help="Seconds one request to the server may take."
    )
    api_key: str | None = setting(
        from_env=True, env=API_KEY_ENV, repr=False,
        help="The worker's API key (a worker key); prefer the variable to the option.",
    )  # fmt: skip
    ca_file: str | None = setting(
        from_env=True, env=CA_FILE_ENV, existing_file=True,
        help="A private CA's certificate (PEM) to trust for an https:// server.",
    )  # fmt: skip
    client_cert: str | None = setting(
        from_env=True, env=CLIENT_CERT_ENV, existing_file=True,
        help="The worker's certificate (PEM) for a server that asks for one (mutual TLS); "
        "one whose subject names the worker role and a namespace serves without a key.",
    )  # fmt: skip
    client_key: str | None = setting(
        from_env=True, env=CLIENT_KEY_ENV, existing_file=True, repr=False,
        help="That certificate's private key (PEM), unless the certificate file holds it.",
    )  # fmt: skip
    start_timeout_seconds: float | None = setting(
        None, gt=0, help="Give up starting if the server or Redis is not reachable within "
        "this many seconds; unset: wait for them, retrying with backoff and logging each "
        "attempt (Compose and Kubernetes start things in any order).",
    )  # fmt: skip
    block_limit_seconds: float = setting(
        10.0, gt=0, help="Seconds an async def task may block its event loop before it fails "
        "with BlockingTaskError (a watchdog thread logs any block from one second on).",
    )  # fmt: skip

    def __attrs_post_init__(self) -> None:
        parse_server_urls(self.server_url)  # a ValueError naming what is wrong
        if self.redis_url is not None:
            parse_redis_url(self.redis_url)


def _address(url: str) -> str:
    """``host:port`` of a Redis URL, or its cluster's seeds (never a password)."""
    return ",".join(f"{host}:{port}" for host, port in parse_redis_url(url).seeds)


async def _granted_redis(
    config: WorkerConfig, registration: RegisterWorker, tls: ssl.SSLContext | None
) -> RedisGrant:
    """Redis credentials of the server's making, for a worker given no Redis URL: asked
    for by registering on a session of their own, with backoff until the server answers
    (for at most ``config.start_timeout_seconds``). The link registers again at once
    (the same process: allowed) and renews them from then on.

    Raises:
        aiki.UnavailableError: the server could not be reached in time.
        aiki.AikiError: it refused (no credentials to grant, a bad key).
    """
    limit = config.start_timeout_seconds
    deadline = trio.current_time() + (limit if limit is not None else math.inf)
    delays = RECONNECT.delays(random.Random())
    for attempt in itertools.count(1):
        try:
            async with Client(config.server_url, api_key=config.api_key, ca_file=config.ca_file,
                              client_cert=config.client_cert,
                              client_key=config.client_key) as client:  # fmt: skip
                reply = await client.call(attrs.evolve(registration, redis_credentials=True))
        except UnavailableError as exc:
            if trio.current_time() > deadline:
                raise
            delay = next(delays)
            logger.warning("the Aiki server is not reachable yet for Redis credentials (%s); "
                           "attempt %d, next in %.1f s", exc, attempt, delay)  # fmt: skip
            await trio.sleep(delay)
            continue
        if reply.redis is None:
            raise AikiError("the server granted no Redis credentials; give the worker a "
                            "Redis URL of its own (--redis-url)")  # fmt: skip
        return reply.redis
    raise AssertionError("unreachable")


async def _until_redis_answers(streams: RedisStreams, config: WorkerConfig) -> None:
    """Ping Redis until it answers, with backoff (logging each attempt), for at most
    ``config.start_timeout_seconds``."""
    limit = config.start_timeout_seconds
    deadline = trio.current_time() + (limit if limit is not None else math.inf)
    delays = RECONNECT.delays(random.Random())
    for attempt in itertools.count(1):
        try:
            await streams.ping()
            return
        except StreamUnavailableError as exc:
            if trio.current_time() > deadline:
                raise
            delay = next(delays)
            logger.warning("Redis at %s is not reachable yet (%s); attempt %d, next in %.1f s",
                           _address(streams.url), exc, attempt, delay)  # fmt: skip
            await trio.sleep(delay)


async def run_worker(
    worker: Worker,
    config: WorkerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a worker until ``shutdown_trigger`` returns, then shut down gracefully.

    Reports the worker ID through ``task_status`` once connected and registered: until
    Redis and the server answer, it tries again with backoff (see
    ``config.start_timeout_seconds``).

    Raises:
        aiki.UnavailableError: the server could not be reached within
            ``config.start_timeout_seconds``.
        aiki.UnauthenticatedError: the server refused the worker's key.
        aiki.ValidationError: ``config.ca_file`` is not a CA certificate file, or
            ``config.client_cert`` and ``config.client_key`` not a certificate and its key.
        transport.StreamUnavailableError: Redis could not be reached within
            ``config.start_timeout_seconds``.
    """
    tls = tls_for(config.ca_file, config.client_cert, config.client_key)
    registration = RegisterWorker(
        worker_id=config.worker_id,
        versions=tuple(version.spec() for version in worker.versions.values()),
        pools=worker.pools,
        concurrency=worker.concurrency,
        # This process's secret: it holds the worker ID while the worker lives, across
        # reconnections; another process registering the ID is refused meanwhile.
        incarnation=secrets.token_urlsafe(24),
    )
    executing = Executing(free=worker.concurrency)
    registered = Registered()  # (the link fills it in; the stream readers start after it)

    def served_streams() -> tuple[str, ...]:
        return worker.streams(registered.namespace, registered.stream_shards)

    credentials = None
    redis_url = config.redis_url
    if redis_url is None:  # the server's grant: its namespace's streams only
        grant = await _granted_redis(config, registration, tls)
        redis_url, credentials = grant.url, RedisCredentials(grant.username, grant.password)
        registration = attrs.evolve(registration, redis_credentials=True)
        registered.credentials, registered.redis_seconds = credentials, grant.seconds

    async with (
        open_redis_streams(redis_url, max_threads=4, credentials=credentials) as streams,
        open_asyncio_loop(config.block_limit_seconds) as asyncio_loop,
    ):
        await _until_redis_answers(streams, config)
        link_box = Mailbox[Call[typing.Any]]("link", capacity=max(64, worker.concurrency * 4))
        subscriber_box = Mailbox[SubscriberMsg](
            "subscriber", capacity=mailbox_capacity(worker.concurrency)
        )
        runs = pool(
            "runs",
            lambda: RunActor(
                config.worker_id,
                worker.versions,
                link_box.address,
                streams,
                executing,
                subscriber_box.address,
                config.call_timeout_seconds,
                asyncio_loop,
            ),
            size=worker.concurrency,
            capacity=worker.concurrency,
            shutdown_grace_seconds=config.shutdown_grace_seconds,
            intensity=RestartIntensity(max_restarts=10, within_seconds=10),
        )
        children: list[Startable] = [
            ChildSpec(
                name="link",
                factory=lambda: Link(Servers(config.server_url), registration,
                                     on_push=executing.stop, api_key=config.api_key, tls=tls,
                                     registered=registered,
                                     first_connect_seconds=config.start_timeout_seconds),
                mailbox=link_box,
            ),
            runs.spec,
            ChildSpec(
                name="heartbeat",
                factory=lambda: Heartbeats(
                    config.worker_id, link_box.address, executing, config.heartbeat_seconds,
                    registered,
                ),
            ),
            ChildSpec(
                name="claimer",
                factory=lambda: Claimer(
                    streams, served_streams(), config.worker_id,
                    subscriber_box.address,
                    executing, config.claim_idle_seconds,
                ),
            ),
            ChildSpec(
                name="subscriber",
                mailbox=subscriber_box,
                factory=lambda: Subscriber(
                    streams, served_streams(), config.worker_id,
                    runs.router, executing,
                    link_box.address, worker.queues(),
                ),
            ),
        ]  # fmt: skip
        # Deterministic scheduling: handlers whose branches contend for trio primitives
        # make the same decisions in every execution.
        with watching_trio(config.block_limit_seconds), deterministic_scheduling():
            async with open_supervisor(
                "worker",
                children,
                strategy="one_for_one",
                intensity=RestartIntensity(max_restarts=5, within_seconds=30),
                shutdown_grace_seconds=config.shutdown_grace_seconds + 10,
            ):
                logger.info(
                    "worker %s serving %s",
                    config.worker_id,
                    ", ".join(f"{w}@{v}" for w, v in worker.versions),
                )
                task_status.started(config.worker_id)
                await shutdown_trigger()
                logger.info("worker %s shutting down", config.worker_id)


__all__ = ["Worker", "WorkerConfig", "run_worker"]
