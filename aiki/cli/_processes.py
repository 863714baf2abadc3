"""``aiki server --processes N``: N server processes on one port.

Each process is a whole server (its own supervision tree, PostgreSQL pool and sessions),
listening with ``SO_REUSEPORT``, so the kernel spreads new connections over them; they
coordinate through PostgreSQL as any server instances do (outbox leases, timers,
schedules firing once, live updates). The parent only supervises: it reserves the port
(for ``--port 0``), starts the processes, reports the URL once all listen, starts again
one that exits (with a backoff), and on SIGINT/SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Final

import attrs
import click

from actors import Backoff

if TYPE_CHECKING:
    from ..server import ServerConfig

logger = logging.getLogger("aiki.server")

READY_SECONDS: Final = 60.0
"""How long a process may take to listen."""
STOP_SECONDS: Final = 40.0
"""How long the processes get to stop (their connections drain) before they are killed."""
RESTART: Final = Backoff(initial_seconds=0.5, max_seconds=10.0)
"""Pauses before starting an exited process again (reset once it ran for a minute)."""
STEADY_SECONDS: Final = 60.0


def _child(
    config: ServerConfig,
    verbose: bool,
    ready: Connection,
    run: Callable[[ServerConfig, bool, Callable[[str], None]], None],
) -> None:
    """A server process: serve until SIGINT/SIGTERM, telling the parent its URL once it
    listens."""
    try:
        run(config, verbose, ready.send)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    finally:
        ready.close()


@attrs.define
class _Slot:
    """One of the N processes, and when to start it again if it exited."""

    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    started_at: float = 0.0
    delays: Iterator[float] = attrs.Factory(lambda: RESTART.delays(random.Random()))
    restart_at: float | None = None


def serve_processes(
    config: ServerConfig,
    count: int,
    verbose: bool,
    run: Callable[[ServerConfig, bool, Callable[[str], None]], None],
) -> None:
    """Run ``count`` server processes sharing ``config``'s port until SIGINT/SIGTERM.

    ``run(config, verbose, started)`` serves one process (``started(url)`` once it listens).

    Raises:
        click.ClickException: the port cannot be bound, or a process did not start.
    """
    context = multiprocessing.get_context("spawn")  # no forked trio or thread state
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: stopping.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    with _reserved(config.host, config.port) as port:
        config = attrs.evolve(config, port=port, reuse_port=True)
        slots = [_Slot(index) for index in range(count)]

        def start(slot: _Slot) -> None:
            ours, theirs = context.Pipe(duplex=False)
            slot.process = context.Process(
                target=_child, args=(config, verbose, theirs, run), name=f"aiki-server-{slot.index}"
            )
            slot.process.start()
            theirs.close()
            slot.ready, slot.started_at, slot.restart_at = ours, time.monotonic(), None

        try:
            for slot in slots:
                start(slot)
            urls = [_wait_ready(slot, stopping) for slot in slots]
            click.echo(f"aiki server listening on {urls[0]} ({count} processes)", nl=True)
            _supervise(slots, start, stopping)
        finally:
            _stop(slots)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def _reserved(host: str, port: int) -> Iterator[int]:
    """Hold ``host``:``port`` (a free one for 0) with a bound socket that does not listen,
    so that no one else takes it while the processes come and go; yield the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise click.ClickException(f"cannot bind {host}:{port}: {exc}") from None
    with holder:
        yield holder.getsockname()[1]


def _wait_ready(slot: _Slot, stopping: list[int]) -> str:
    assert slot.ready is not None
    assert slot.process is not None
    deadline = time.monotonic() + READY_SECONDS
    while not stopping and time.monotonic() < deadline:
        if slot.ready.poll(0.1):
            with contextlib.suppress(EOFError):
                url: str = slot.ready.recv()
                return url
            break  # the process ended before it listened
    if stopping:
        raise click.ClickException("stopped while starting")
    slot.process.join(1)
    raise click.ClickException(
        f"server process {slot.index} did not start (exit code {slot.process.exitcode}); "
        "its error is above"
    )


def _supervise(slots: list[_Slot], start: Callable[[_Slot], None], stopping: list[int]) -> None:
    """Start again each process that exits, after a backoff, until a signal comes."""
    while not stopping:
        sentinels = [slot.process.sentinel for slot in slots
                     if slot.process is not None and slot.restart_at is None]  # fmt: skip
        multiprocessing.connection.wait(sentinels, timeout=0.2)
        now = time.monotonic()
        for slot in slots:
            process = slot.process
            if slot.restart_at is None and process is not None and not process.is_alive():
                if now - slot.started_at > STEADY_SECONDS:
                    slot.delays = RESTART.delays(random.Random())
                delay = next(slot.delays)
                logger.warning("server process %d exited (code %s); starting it again in "
                               "%.1f s", slot.index, process.exitcode, delay)  # fmt: skip
                slot.restart_at = now + delay
            elif slot.restart_at is not None and now >= slot.restart_at and not stopping:
                start(slot)


def _stop(slots: list[_Slot]) -> None:
    """SIGTERM every process, wait for them to drain, SIGKILL what is left."""
    running = [slot.process for slot in slots if slot.process is not None]
    for process in running:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)
