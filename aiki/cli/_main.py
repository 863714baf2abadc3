"""The ``aiki`` command line.

- ``aiki dev module:worker``: databases, a server and a worker in one command;
- ``aiki server``: the server process (PostgreSQL and Redis given by URL);
- ``aiki worker module:worker``: a worker process serving the workflows of ``worker``;
- ``aiki services``: a local PostgreSQL and Redis, kept up until interrupted;
- ``aiki runs|events|workers|schedules ...``: operators' commands (`_runs`, `_schedules`);
- ``aiki keys ...``: API keys (`_keys`).

``AIKI_DATABASE_URL``, ``AIKI_REDIS_URL`` and ``AIKI_SERVER_URL`` supply the URLs,
``AIKI_API_KEY`` the key workers and commands act with.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import trio

from actors import ActorError
from transport import LocalServiceError, TransportError
from transport.local_services import services_from_env

from .. import __version__
from ..errors import AikiError
from ..worker import Worker
from ._keys import keys
from ._logs import formatter
from ._processes import serve_processes
from ._runs import events, runs, workers
from ._schedules import schedules

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..server import ServerConfig


class _NoTracebacks(logging.Filter):
    """Keep log lines short at the default verbosity (``-v`` shows tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    try:
        handler.setFormatter(formatter(os.environ.get("AIKI_LOG_FORMAT")))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not verbose:
        handler.addFilter(_NoTracebacks())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


@click.group()
@click.version_option(__version__, prog_name="aiki")
def main() -> None:
    """Aiki: durable workflows as ordinary async Python."""


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".aiki/services"),
    show_default=True,
    help="Where the servers keep their data (reused on the next start).",
)
def services(data_dir: Path) -> None:
    """Run a local PostgreSQL and Redis until interrupted, and print how to use them."""
    _configure_logging(False)
    try:
        running = services_from_env(data_dir.resolve())
    except LocalServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    # Block only now: child processes inherit the signal mask, and the servers must not.
    watched = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        # What `aiki server` and `aiki worker` read, then what the test suite reads.
        click.echo(f"export AIKI_DATABASE_URL={running.database_url}")
        click.echo(f"export AIKI_REDIS_URL={running.redis_url}")
        click.echo(f"export AIKI_TEST_DATABASE_URL={running.database_url}")
        click.echo(f"export AIKI_TEST_REDIS_URL={running.redis_url}")
        click.echo("# PostgreSQL and Redis are up (for aiki server, aiki worker and the tests); "
                   "Ctrl-C stops them.", err=True)  # fmt: skip
        signal.sigwait(watched)
    finally:
        running.stop()


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def _run(main_fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``main_fn`` under trio; report startup failures as clean CLI errors."""
    try:
        trio.run(main_fn)
    except* (TransportError, AikiError) as group:
        message = "; ".join(str(error) for error in group.exceptions)
        raise click.ClickException(message) from None
    except* ActorError as group:  # the root supervisor gave up: exit rather than limp on
        logging.getLogger("aiki").error("exiting: %s", group.exceptions[0],
                                        exc_info=group.exceptions[0])  # fmt: skip
        raise click.ClickException(f"supervision gave up: {group.exceptions[0]}") from None


def _load_worker(target: str) -> Worker:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected module:attribute, got {target!r}", param_hint="TARGET")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="TARGET"
        ) from None
    if not hasattr(module, attribute):
        workers = [name for name, value in vars(module).items() if isinstance(value, Worker)]
        close = difflib.get_close_matches(attribute, workers, n=1)
        hint = (f"; did you mean {module_name}:{close[0]}?" if close else
                f"; its aiki.Workers: {', '.join(sorted(workers)) or 'none'}")  # fmt: skip
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attribute!r}{hint}", param_hint="TARGET"
        )
    found = getattr(module, attribute)
    if not isinstance(found, Worker):
        raise click.BadParameter(
            f"{target} is {type(found).__name__}, not an aiki.Worker", param_hint="TARGET"
        )
    return found


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8470, show_default=True, help="Port (0: any free port).")
@click.option(
    "--database-url",
    envvar="AIKI_DATABASE_URL",
    required=True,
    help="PostgreSQL URL [env AIKI_DATABASE_URL].",
)
@click.option(
    "--redis-url",
    envvar="AIKI_REDIS_URL",
    required=True,
    help="Redis URL: redis://host:port/db, or a Redis Cluster's "
    "redis+cluster://host:port,host:port [env AIKI_REDIS_URL].",
)
@click.option(
    "--stall-after",
    default=300.0,
    show_default=True,
    help="Seconds a queued run may go untaken before it is marked stalled.",
)
@click.option(
    "--timer-scan",
    default=15.0,
    show_default=True,
    help="Seconds between the timers' scans of upcoming deadlines.",
)
@click.option(
    "--claim-timeout",
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat before a worker's runs are queued again.",
)
@click.option(
    "--max-lost-executions",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fail a run (executions_lost) once its worker died or was declared dead this many "
    "times while running it, instead of queueing it again.",
)
@click.option(
    "--redelivery-timeout",
    default=60.0,
    show_default=True,
    help="Seconds a published run may stay queued before it is published again.",
)
@click.option(
    "--subscriber-queue",
    default=1024,
    show_default=True,
    help="Updates a live-update subscriber may fall behind by before it gets a resync marker.",
)
@click.option(
    "--schedule-grace",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds late after which a schedule's occurrence counts as missed (catch-up policy).",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Open HTTP and WebSocket connections at once; more are answered 503 (retry later).",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="A browser origin (https://ops.example.com) that may open WebSocket sessions besides "
    "the server's own (repeatable).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A PEM certificate (chain): serve HTTPS and WSS on the port (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The certificate's private key (PEM).",
)
@click.option(
    "--metrics-host",
    default=None,
    help="Also serve /metrics without a key on this address (a scraper's own network).",
)
@click.option("--metrics-port", default=9470, show_default=True, help="The port of --metrics-host.")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve everyone without an API key, with every role (loopback addresses only).",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server processes sharing the port (SO_REUSEPORT), each a whole server; one that "
    "exits is started again.",
)
@click.option(
    "--stream-shards",
    default=1,
    show_default=True,
    envvar="AIKI_STREAM_SHARDS",
    type=click.IntRange(min=1, max=64),
    help="Redis sub-streams per queue, so one hot workflow spreads over a Redis Cluster's "
    "nodes (the same on every server) [env AIKI_STREAM_SHARDS].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def server(
    host: str,
    port: int,
    database_url: str,
    redis_url: str,
    stall_after: float,
    timer_scan: float,
    claim_timeout: float,
    max_lost_executions: int,
    redelivery_timeout: float,
    subscriber_queue: int,
    schedule_grace: float,
    max_connections: int,
    allowed_origins: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
    metrics_host: str | None,
    metrics_port: int,
    insecure_no_auth: bool,
    processes: int,
    stream_shards: int,
    verbose: bool,
) -> None:
    """Run the Aiki server (API, dispatcher, timers, scheduler, sweeper) until
    SIGINT/SIGTERM.

    Every request needs an API key (``aiki keys``) unless --insecure-no-auth.
    """
    from ..server import ServerConfig

    _configure_logging(verbose)
    try:
        config = ServerConfig(
            database_url=database_url,
            redis_url=redis_url,
            host=host,
            port=port,
            stall_after_seconds=stall_after,
            timer_scan_seconds=timer_scan,
            claim_timeout_seconds=claim_timeout,
            max_lost_executions=max_lost_executions,
            redelivery_seconds=redelivery_timeout,
            subscriber_queue=subscriber_queue,
            schedule_grace_seconds=schedule_grace,
            max_connections=max_connections,
            allowed_origins=allowed_origins,
            insecure_no_auth=insecure_no_auth,
            tls_cert=tls_cert,
            tls_key=tls_key,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            stream_shards=stream_shards,
        )
    except ValueError as exc:  # e.g. --insecure-no-auth on an address that is not loopback
        raise click.UsageError(str(exc)) from None
    if processes > 1:
        serve_processes(config, processes, verbose, serve_one)
        return

    def started(url: str) -> None:
        click.echo(f"aiki server listening on {url}")
        sys.stdout.flush()

    serve_one(config, verbose, started)


def serve_one(config: ServerConfig, verbose: bool, started: Callable[[str], None]) -> None:
    """Run one server process until SIGINT/SIGTERM; ``started(url)`` once it listens."""
    from ..server import serve

    _configure_logging(verbose)
    logging.getLogger("aiki.audit").setLevel(logging.INFO)

    async def main_fn() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(serve, config, shutdown_trigger=_until_signal)
            )
            started(url)

    _run(main_fn)


@main.command()
@click.argument("target")
@click.option(
    "--server-url",
    envvar="AIKI_SERVER_URL",
    default="http://127.0.0.1:8470",
    show_default=True,
    help="The server, or several comma-separated: the worker uses one at a time and moves "
    "on to the next when it goes away [env AIKI_SERVER_URL].",
)
@click.option(
    "--redis-url",
    envvar="AIKI_REDIS_URL",
    required=True,
    help="Redis URL: redis://host:port/db, or a Redis Cluster's "
    "redis+cluster://host:port,host:port [env AIKI_REDIS_URL].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Runs at once (default: the Worker's own setting).",
)
@click.option(
    "--shutdown-grace",
    default=30.0,
    show_default=True,
    help="Seconds runs in progress may take to finish on shutdown.",
)
@click.option(
    "--heartbeat",
    default=5.0,
    show_default=True,
    help="Seconds between heartbeats (keep well under the server's --claim-timeout).",
)
@click.option(
    "--claim-idle",
    default=60.0,
    show_default=True,
    help="Seconds a stream entry may stay unacknowledged before this worker takes it over.",
)
@click.option(
    "--block-limit",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an async def task may block its event loop before it fails (BlockingTaskError).",
)
@click.option(
    "--start-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Give up if the server or Redis is not reachable within this many seconds "
    "(default: wait for them, retrying with backoff).",
)
@click.option(
    "--api-key",
    envvar="AIKI_API_KEY",
    default=None,
    help="The worker's API key, a worker key [env AIKI_API_KEY; prefer it to this option].",
)
@click.option(
    "--ca-file",
    envvar="AIKI_CA_FILE",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A private CA's certificate (PEM) for an https:// server [env AIKI_CA_FILE].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def worker(
    target: str,
    server_url: str,
    redis_url: str,
    concurrency: int | None,
    shutdown_grace: float,
    heartbeat: float,
    claim_idle: float,
    block_limit: float,
    start_timeout: float | None,
    api_key: str | None,
    ca_file: str | None,
    verbose: bool,
) -> None:
    """Run a worker serving TARGET (module:attribute naming an aiki.Worker)."""
    from ..worker import WorkerConfig, run_worker

    _configure_logging(verbose)
    served = _load_worker(target)
    if concurrency is not None:
        served.concurrency = concurrency
    try:
        config = WorkerConfig(
            server_url=server_url, redis_url=redis_url, shutdown_grace_seconds=shutdown_grace,
            heartbeat_seconds=heartbeat, claim_idle_seconds=claim_idle, api_key=api_key,
            ca_file=ca_file, block_limit_seconds=block_limit,
            start_timeout_seconds=start_timeout,
        )  # fmt: skip
    except ValueError as exc:  # e.g. a Redis URL that is not one
        raise click.UsageError(str(exc)) from None

    async def main_fn() -> None:
        async with trio.open_nursery() as nursery:
            worker_id = await nursery.start(
                functools.partial(run_worker, served, config, shutdown_trigger=_until_signal)
            )
            click.echo(
                f"aiki worker {worker_id} serving "
                + ", ".join(f"{w}@{v}" for w, v in served.versions)
            )
            sys.stdout.flush()

    _run(main_fn)


@main.command()
@click.argument("target")
@click.option("--port", default=8470, show_default=True, help="The server's port (0: any).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".aiki/dev"),
    show_default=True,
    help="Where the local databases keep their data between sessions.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Runs at once.")
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def dev(target: str, port: int, data_dir: Path, concurrency: int | None, verbose: bool) -> None:
    """Run PostgreSQL, Redis, a server and a worker for TARGET, until Ctrl-C."""
    from ..dev import open_dev

    _configure_logging(verbose)
    served = _load_worker(target)
    if concurrency is not None:
        served.concurrency = concurrency

    data_path = data_dir.resolve()

    async def main_fn() -> None:
        async with open_dev(served, data_dir=data_path, port=port) as env:
            click.echo(f"aiki dev: server {env.url}, worker {env.worker_id}")
            click.echo(f"  export AIKI_SERVER_URL={env.url}")
            click.echo(f"  export AIKI_DATABASE_URL={env.services.database_url}")
            click.echo(f"  export AIKI_REDIS_URL={env.services.redis_url}")
            click.echo("Ctrl-C stops everything.")
            sys.stdout.flush()
            await _until_signal()

    _run(main_fn)


main.add_command(runs)
main.add_command(events)
main.add_command(workers)
main.add_command(schedules)
main.add_command(keys)
