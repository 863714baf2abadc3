"""The ``aiki`` command line.

- ``aiki demo``: run the end-to-end demo against local (or configured) PostgreSQL and Redis;
- ``aiki services``: start a local PostgreSQL and Redis and keep them up, printing the
  environment variables that point the test suite or your app at them.

``AIKI_DATABASE_URL`` and ``AIKI_REDIS_URL`` make both commands use existing servers.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import click
import trio

from transport import LocalServiceError, TransportError, services_from_env

from . import __version__


class _NoTracebacks(logging.Filter):
    """Keep log lines short at the default verbosity (``-v`` shows tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_NoTracebacks())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


@click.group()
@click.version_option(__version__, prog_name="aiki")
def main() -> None:
    """Aiki: durable workflows as ordinary async Python."""


@main.command()
@click.option("--jobs", default=2000, show_default=True, help="How many jobs to push through.")
@click.option("--recorders", default=4, show_default=True, help="Size of the actor pool.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the local servers' data here (default: a temporary directory, removed after).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log lifecycle events and tracebacks.")
def demo(jobs: int, recorders: int, data_dir: Path | None, verbose: bool) -> None:
    """Push jobs through Redis Streams into PostgreSQL with a supervised actor pool."""
    from .demo import run_demo

    if jobs < 8 or recorders < 1:
        raise click.BadParameter("--jobs must be at least 8 and --recorders at least 1")
    _configure_logging(verbose)
    base = data_dir or Path(tempfile.mkdtemp(prefix="aiki-demo-"))
    click.echo("Starting PostgreSQL and Redis (AIKI_DATABASE_URL / AIKI_REDIS_URL to use yours)…")
    try:
        services = services_from_env(base)
    except LocalServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        click.echo(f"  postgres {services.database_url}\n  redis    {services.redis_url}")
        trio.run(lambda: run_demo(services.database_url, services.redis_url, jobs=jobs,
                                  recorders=recorders))  # fmt: skip
    except TransportError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for service in (services.redis, services.postgres):
            if service is None:
                continue
            if data_dir is None:
                service.remove()
            else:
                service.stop()
        if data_dir is None:
            shutil.rmtree(base, ignore_errors=True)


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
        click.echo(f"export AIKI_TEST_DATABASE_URL={running.database_url}")
        click.echo(f"export AIKI_TEST_REDIS_URL={running.redis_url}")
        click.echo("# PostgreSQL and Redis are up; Ctrl-C stops them.", err=True)
        signal.sigwait(watched)
    finally:
        running.stop()
