"""``aiki services|server|worker|dev``: the commands that run processes, and what they
share (logging, signals, startup errors as clean CLI errors, loading a worker target).
Loaded only when one of them is invoked (or ``aiki --help`` lists them)."""

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

from ..errors import AikiError
from ..server import ServerConfig
from ..worker import Worker, WorkerConfig
from ._logs import formatter
from ._processes import serve_processes
from ._settings import config_from, passes_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


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


@click.command()
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


@click.command()
@passes_settings(ServerConfig)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Server processes sharing the port (SO_REUSEPORT), each a whole server; one that "
    "exits is started again.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def server(settings: dict[str, object], processes: int, verbose: bool) -> None:
    """Run the Aiki server (API, dispatcher, timers, scheduler, sweeper) until
    SIGINT/SIGTERM.

    Every request needs an API key (``aiki keys``) unless --insecure-no-auth. Each
    setting may be given as an option or by its environment variable.
    """
    _configure_logging(verbose)
    config = config_from(ServerConfig, settings)
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


@click.command()
@click.argument("target")
@passes_settings(WorkerConfig)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Runs at once (default: the Worker's own setting).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def worker(
    target: str, settings: dict[str, object], concurrency: int | None, verbose: bool
) -> None:
    """Run a worker serving TARGET (module:attribute naming an aiki.Worker).

    Each setting may be given as an option or by its environment variable.
    """
    from ..worker import run_worker

    _configure_logging(verbose)
    served = _load_worker(target)
    if concurrency is not None:
        served.concurrency = concurrency
    config = config_from(WorkerConfig, settings)

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


@click.command()
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
