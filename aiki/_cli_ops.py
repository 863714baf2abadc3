"""Operator commands: ``aiki runs ...``, ``aiki events send``, ``aiki workers list``.

Each talks to a running server (``--server-url`` or ``AIKI_SERVER_URL``), prints a table
for people or, with ``--json``, one JSON document (``runs watch``: one per line) for
scripts. Exit codes: 0 done, 1 the server refused the request, 2 bad usage, 3 no such run,
4 the server could not be reached.
"""

from __future__ import annotations

import sys
import typing
from typing import Final, TypeVar

import click
import orjson
import trio

from transport import WireCodec

from ._protocol_live import RunUpdate, TaskProgress
from ._protocol_views import RunDetails, WorkerInfo
from ._states import ALL_STATUSES, TERMINAL
from ._watch import Resync
from .client import Client
from .errors import AikiError, NotFoundError, UnavailableError

if typing.TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")

EXIT_REFUSED: Final = 1
EXIT_NOT_FOUND: Final = 3
EXIT_UNREACHABLE: Final = 4

_server_url = click.option(
    "--server-url",
    envvar="AIKI_SERVER_URL",
    default="http://127.0.0.1:8470",
    show_default=True,
    help="The Aiki server [env AIKI_SERVER_URL].",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_statuses = click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(sorted(ALL_STATUSES)),
    help="Only runs in this status (repeatable).",
)


def _call(server_url: str, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``action`` with a client; map Aiki errors to a message and an exit code."""

    async def main() -> T:
        async with Client(server_url) as client:
            return await action(client)

    try:
        return trio.run(main)
    except (AikiError, BaseExceptionGroup) as raised:
        error = _aiki_error(raised)
        if error is None:
            raise
        click.echo(f"error: {error}", err=True)
        if isinstance(error, UnavailableError):
            sys.exit(EXIT_UNREACHABLE)
        sys.exit(EXIT_NOT_FOUND if isinstance(error, NotFoundError) else EXIT_REFUSED)


def _aiki_error(raised: BaseException) -> AikiError | None:
    """The one Aiki error in ``raised`` (the client's nursery may group it), if that is all
    there is."""
    if isinstance(raised, AikiError):
        return raised
    if isinstance(raised, BaseExceptionGroup) and len(raised.exceptions) == 1:
        return _aiki_error(raised.exceptions[0])
    return None


def _dump(value: object, kind: type) -> None:
    codec = WireCodec[object](kind)
    click.echo(codec.encode(value).decode())


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in
              enumerate(headers)]  # fmt: skip
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _short(value: object, limit: int = 60) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@click.group()
def runs() -> None:
    """List, inspect, watch and control runs."""


@runs.command("list")
@_server_url
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--version", "version_", help="Only runs of this version (with --workflow).")
@_statuses
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", help="The next page (printed after a full page).")
@_json
def list_runs(
    server_url: str,
    workflow: str | None,
    version_: str | None,
    statuses: tuple[str, ...],
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Runs, newest first."""
    page = _call(server_url, lambda client: client.list_runs(
        workflow=workflow, version=version_, statuses=typing.cast("tuple[typing.Any, ...]",
        statuses), limit=limit, cursor=cursor))  # fmt: skip
    if as_json:
        _dump(page, type(page))
        return
    rows = [(run.id, f"{run.workflow}@{run.version}", run.status, run.attempt,
             _when(run.created_at), _when(run.updated_at)) for run in page.runs]  # fmt: skip
    click.echo(_table(("id", "workflow", "status", "attempt", "created", "updated"), rows))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@runs.command("show")
@_server_url
@click.argument("run_id")
@_json
def show_run(server_url: str, run_id: str, as_json: bool) -> None:
    """One run: its state, input and output, tasks with attempts, and timeline."""
    details = _call(server_url, lambda client: client.describe_run(run_id))
    if as_json:
        _dump(details, RunDetails)
        return
    run = details.run
    fields = [
        ("run", run.id), ("workflow", f"{run.workflow}@{run.version}"), ("status", run.status),
        ("revision", run.revision), ("attempt", run.attempt),
        ("reference", run.reference_id or "-"), ("parent", run.parent_id or "-"),
        ("created", _when(run.created_at)), ("updated", _when(run.updated_at)),
        ("input", _short(run.input, 200)),
    ]  # fmt: skip
    if run.status == "completed":
        fields.append(("output", _short(run.output, 200)))
    if run.error is not None:
        fields.append(("error", f"{run.error.type}: {run.error.message}"))
    if run.wake_at is not None:
        fields.append(("wakes", _when(run.wake_at)))
    width = max(len(name) for name, _ in fields)
    click.echo("\n".join(f"{name.ljust(width)}  {value}" for name, value in fields))
    click.echo("\ntasks")
    task_rows = [(task.address, task.seq, task.name, task.state, task.attempts,
                  _short(task.output if task.error is None else task.error.message, 50),
                  _when(task.updated_at)) for task in details.tasks]  # fmt: skip
    click.echo(_table(("address", "seq", "task", "state", "attempts", "result", "at"), task_rows)
               if task_rows else "  (none)")  # fmt: skip
    for task in details.tasks:
        for failure in task.failed_attempts:
            message = failure.error.message if failure.error else "?"
            click.echo(f"  {task.address}#{task.seq} attempt {failure.attempt} failed: {message}")
    if details.progress:
        click.echo("\nprogress")
        for report in details.progress:
            click.echo(f"  {report.task}#{report.seq}  {_when(report.at)}  "
                       f"{_short(report.details, 120)}")  # fmt: skip
    click.echo("\ntimeline")
    steps = [(_when(step.at), step.revision, step.previous or "-", step.status,
              step.reason or "", step.worker_id or "") for step in details.timeline]  # fmt: skip
    click.echo(_table(("at", "rev", "from", "to", "reason", "worker"), steps))


@runs.command("watch")
@_server_url
@click.argument("run_id", required=False)
@click.option("--workflow", help="Updates of this workflow's runs.")
@click.option("--version", "version_", help="Only this version (with --workflow).")
@_statuses
@_json
def watch_runs(
    server_url: str,
    run_id: str | None,
    workflow: str | None,
    version_: str | None,
    statuses: tuple[str, ...],
    as_json: bool,
) -> None:
    """Print live updates as they commit (one run: from its start until it ends; else
    until interrupted)."""

    def show(update: RunUpdate | Resync | TaskProgress) -> None:
        if isinstance(update, Resync):
            click.echo('{"resync": true}' if as_json else "(updates may have been missed)")
        elif isinstance(update, TaskProgress):
            if as_json:
                click.echo(f'{{"progress": {_PROGRESS.encode(update).decode()}}}')
            else:
                click.echo(f"{_when(update.at)}  {update.run_id}  {update.task}"
                           f"#{update.seq} progress {_short(update.details, 120)}")  # fmt: skip
        elif as_json:
            click.echo(_UPDATE.encode(update).decode())
        else:
            click.echo(f"{_when(update.at)}  {update.run_id}  {update.workflow}@{update.version}"
                       f"  r{update.revision}  {update.previous or '-'} -> {update.status}"
                       f"  {update.reason or ''}".rstrip())  # fmt: skip
        sys.stdout.flush()

    async def watch(client: Client) -> None:
        request = client.watch(
            run_id, workflow=workflow, version=version_,
            statuses=typing.cast("tuple[typing.Any, ...]", statuses),
            after_revision=0 if run_id else None, progress=True,
        )  # fmt: skip
        async with request as updates:
            async for update in updates:
                show(update)
                if run_id and isinstance(update, RunUpdate) and update.status in TERMINAL:
                    return

    _call(server_url, watch)


_UPDATE: Final = WireCodec[RunUpdate](RunUpdate)
_PROGRESS: Final = WireCodec[TaskProgress](TaskProgress)


def _control(name: str, summary: str, *, reason: str | None) -> click.Command:
    """A command that applies one control action to a run."""

    @click.command(name, help=summary)
    @_server_url
    @click.argument("run_id")
    @_json
    def command(server_url: str, run_id: str, as_json: bool, **options: str) -> None:
        action = getattr(Client, name)
        reply = _call(server_url, lambda client: action(client, run_id, **options))
        if as_json:
            _dump(reply, type(reply))
        else:
            click.echo(f"{name}: {_short(WireCodec[object](type(reply)).unstructure(reply), 200)}")

    if reason is not None:
        command = click.option("--reason", default=reason, show_default=True)(command)
    return command


runs.add_command(
    _control("cancel", "Cancel a run and its unfinished children.", reason="cancelled")
)
runs.add_command(_control("pause", "Pause a run (and its children).", reason="paused"))
runs.add_command(_control("resume", "Resume a paused run.", reason=None))
runs.add_command(_control("wakeup", "Cut a run's pending sleeps short.", reason=None))
runs.add_command(_control("requeue", "Queue a run again (recovery).", reason="requeued"))


@click.group()
def events() -> None:
    """Send events to runs."""


@events.command("send")
@_server_url
@click.argument("run_id")
@click.argument("name")
@click.argument("data", required=False, default="null")
@click.option("--reference-id", help="Deduplicate: a repeated reference ID is ignored.")
@_json
def send_event(
    server_url: str, run_id: str, name: str, data: str, reference_id: str | None, as_json: bool
) -> None:
    """Send event NAME to RUN_ID with DATA (JSON; default null)."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="DATA") from None
    sent = _call(server_url, lambda client: client.send_event(
        run_id, name, payload, reference_id=reference_id))  # fmt: skip
    if as_json:
        _dump(sent, type(sent))
    else:
        note = " (duplicate: ignored)" if sent.duplicate else ""
        click.echo(f"sent {sent.name} #{sent.seq} to {sent.run_id}{note}")


@click.group()
def workers() -> None:
    """Inspect workers."""


@workers.command("list")
@_server_url
@click.option("--all", "include_gone", is_flag=True, help="Also workers declared dead.")
@_json
def list_workers(server_url: str, include_gone: bool, as_json: bool) -> None:
    """Registered workers: liveness, capacity, active runs."""
    found = _call(server_url, lambda client: client.list_workers(include_gone=include_gone))
    if as_json:
        click.echo(orjson.dumps([_WORKER.unstructure(worker) for worker in found]).decode())
        return
    rows = [(worker.id, "alive" if worker.alive else "gone",
             f"{worker.active_runs}/{worker.concurrency}", _when(worker.last_seen_at),
             ", ".join(worker.versions)) for worker in found]  # fmt: skip
    click.echo(_table(("id", "state", "runs", "last seen", "serves"), rows))


_WORKER: Final = WireCodec[WorkerInfo](WorkerInfo)
