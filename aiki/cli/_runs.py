"""Operator commands: ``aiki runs ...``, ``aiki events send``, ``aiki workers list``,
``aiki versions list``.

Each talks to a running server (``--server-url`` or ``AIKI_SERVER_URL``), prints a table
for people or, with ``--json``, one JSON document (``runs watch``: one per line) for
scripts. Exit codes: 0 done, 1 the server refused the request, 2 bad usage, 3 no such run,
4 the server could not be reached.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid
from typing import TYPE_CHECKING, Final

import click
import orjson

from ..client import Client, Resync
from ..protocol import (
    ALL_STATUSES,
    DEFAULT_PRIORITY,
    TERMINAL,
    EventSent,
    RunDetails,
    RunInfo,
    RunPage,
    RunsRetried,
    RunsStopped,
    RunStarted,
    RunTransitioned,
    RunUpdate,
    StartOptions,
    StartRun,
    TaskProgress,
    VersionInfo,
    WokenUp,
    WorkerInfo,
    is_status,
)
from ..wire import WireCodec
from ._common import call_server, dump, json_option, server_url_option, short, table, when

if TYPE_CHECKING:
    from collections.abc import Sequence

_statuses = click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(sorted(ALL_STATUSES)),
    help="Only runs in this status (repeatable).",
)


@click.group()
def runs() -> None:
    """List, inspect, watch and control runs."""


@runs.command("list")
@server_url_option
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--version", "version_", help="Only runs of this version (with --workflow).")
@_statuses
@click.option("--reference-id", help="Only runs started with this reference ID.")
@click.option("--parent", help="Only the children of this run (its ID or reference ID).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", help="The next page (printed after a full page).")
@json_option
def list_runs(
    server_url: str,
    workflow: str | None,
    version_: str | None,
    statuses: tuple[str, ...],
    reference_id: str | None,
    parent: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Runs, newest first."""

    async def page_of(client: Client) -> RunPage:
        parent_id = None if parent is None else await run_id_of(client, parent)
        return await client.list_runs(
            workflow=workflow, version=version_, statuses=tuple(filter(is_status, statuses)),
            reference_id=reference_id, parent_id=parent_id, limit=limit, cursor=cursor,
        )  # fmt: skip

    page = call_server(server_url, page_of)
    if as_json:
        dump(page, type(page))
        return
    click.echo(_runs_table(page.runs))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def _runs_table(found: Sequence[RunInfo]) -> str:
    rows = [(run.id, f"{run.workflow}@{run.version}", run.status, run.reference_id or "-",
             run.attempt, when(run.created_at), when(run.updated_at))
            for run in found]  # fmt: skip
    return table(("id", "workflow", "status", "reference", "attempt", "created", "updated"),
                 rows)  # fmt: skip


async def run_id_of(client: Client, run: str) -> str:
    """The ID of the run ``run`` names: a run ID as it is, else the run started with that
    reference ID (`aiki.Client.find_run`)."""
    try:
        uuid.UUID(run)
    except ValueError:
        return (await client.find_run(run)).id
    return run


_RUN_HELP: Final = "RUN is a run ID, or the reference ID the run was started with."


class _Since(click.ParamType):  # type: ignore[type-arg]
    """A moment: a duration ago (``90s``, ``30m``, ``2h``, ``7d``) or an ISO 8601 time
    (local time if it names no offset)."""

    name = "since"
    _UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        if (match := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)) is not None:
            seconds = float(match[1]) * self._UNITS[match[2]]
            return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time",
                      param, ctx)  # fmt: skip
        return moment if moment.tzinfo else moment.astimezone()


@runs.command("start")
@server_url_option
@click.argument("workflow")
@click.argument("version")
@click.argument("data", required=False, default="null")
@click.option("--reference-id", help="Idempotency: a second start with it finds this run.")
@click.option(
    "--conflict",
    type=click.Choice(["error", "return_existing"]),
    default="error",
    show_default=True,
    help="With a known reference ID and another input: refuse, or return the existing run.",
)
@click.option("--pool", help="The worker pool to run it on (default: the default pool).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Fail the run if it has not ended within this many seconds.")  # fmt: skip
@click.option("--priority", type=click.IntRange(0, 4),
              help="0 (lowest) to 4 (highest; default 2): a waiting run goes before every "
                   "waiting run of a lower level.")  # fmt: skip
@click.option("--fairness-key", help="Who the run is for (a tenant): waiting runs go across "
              "fairness keys in proportion to their weights.")  # fmt: skip
@click.option("--fairness-weight", type=click.IntRange(1, 1000),
              help="The fairness key's share (default 1).")  # fmt: skip
@json_option
def start_run(
    server_url: str,
    workflow: str,
    version: str,
    data: str,
    reference_id: str | None,
    conflict: str,
    pool: str | None,
    timeout: float | None,
    priority: int | None,
    fairness_key: str | None,
    fairness_weight: int | None,
    as_json: bool,
) -> None:
    """Start a run of WORKFLOW at VERSION with input DATA (JSON; default null)."""
    payload = _json_argument(data, "DATA")
    options = StartOptions(reference_id=reference_id, pool=pool, timeout_seconds=timeout,
                           conflict="return_existing" if conflict == "return_existing"
                           else "error", priority=priority, fairness_key=fairness_key,
                           fairness_weight=fairness_weight)  # fmt: skip
    request = StartRun(workflow=workflow, version=version, input=payload, options=options)

    async def start(client: Client) -> tuple[RunStarted, str | None]:
        started = await client.start_run(request)
        if started.run.status != "queued":
            return started, None
        return started, (await client.describe_run(started.run.id)).unserved

    started, unserved = call_server(server_url, start)
    if unserved is not None:  # (accepted, and it would sit there without a word)
        click.echo(f"note: the run waits: {unserved}", err=True)
    if as_json:
        dump(started, type(started))
    elif started.created:
        click.echo(f"started run {started.run.id} of {workflow}@{version}")
    else:
        click.echo(f"run {started.run.id} already has reference ID {reference_id!r} "
                   f"({started.run.status}); no new run")  # fmt: skip


def _json_argument(data: str, name: str) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None


@runs.command("show", epilog=_RUN_HELP)
@server_url_option
@click.argument("run")
@json_option
def show_run(server_url: str, run: str, as_json: bool) -> None:
    """One run: its state, input and output, tasks with attempts, children, timeline."""

    async def describe(client: Client) -> tuple[RunDetails, RunPage]:
        details = await client.describe_run(await run_id_of(client, run))
        children = await client.list_runs(parent_id=details.run.id, limit=20)
        return details, children

    details, children = call_server(server_url, describe)
    if as_json:
        dump(details, RunDetails)
        return
    _show(details, children)


def _show(details: RunDetails, children: RunPage) -> None:
    run = details.run
    fields: list[tuple[str, object]] = [
        ("run", run.id), ("namespace", run.namespace),
        ("workflow", f"{run.workflow}@{run.version}"), ("status", run.status),
        ("revision", run.revision), ("attempt", run.attempt),
        ("reference", run.reference_id or "-"), ("parent", run.parent_id or "-"),
        ("created", when(run.created_at)), ("updated", when(run.updated_at)),
        ("input", short(run.input, 200)),
    ]  # fmt: skip
    if run.status == "completed":
        fields.append(("output", short(run.output, 200)))
    if run.error is not None:
        fields.append(("error", f"{run.error.type}: {run.error.message}"))
    if run.wake_at is not None:
        fields.append(("wakes", when(run.wake_at)))
    if details.unserved is not None:
        fields.append(("waiting", details.unserved))
    if run.priority != DEFAULT_PRIORITY or run.fairness_key is not None:
        fair = f", fairness key {run.fairness_key} (weight {run.fairness_weight})" if (
            run.fairness_key is not None) else ""  # fmt: skip
        fields.append(("priority", f"{run.priority}{fair}"))
    if details.gate is not None:
        fields.append(("gate", f"{details.gate.summary} (since {when(details.gate.since)})"))
    width = max(len(name) for name, _ in fields)
    click.echo("\n".join(f"{name.ljust(width)}  {value}" for name, value in fields))
    if details.waits:
        click.echo("\nwaits for")
        click.echo(table(("kind", "name", "seq", "until", "since"), [
            (wait.kind, wait.key, wait.seq, when(wait.until) if wait.until else "-",
             when(wait.since)) for wait in details.waits]))  # fmt: skip
    click.echo("\ntasks")
    task_rows = [(task.address, task.seq, task.name, task.state, task.attempts,
                  short(task.output if task.error is None else task.error.message, 50),
                  when(task.updated_at)) for task in details.tasks]  # fmt: skip
    click.echo(table(("address", "seq", "task", "state", "attempts", "result", "at"), task_rows)
               if task_rows else "  (none)")  # fmt: skip
    for task in details.tasks:
        for failure in task.failed_attempts:
            message = failure.error.message if failure.error else "?"
            click.echo(f"  {task.address}#{task.seq} attempt {failure.attempt} failed: {message}")
    if details.progress:
        click.echo("\nprogress")
        for report in details.progress:
            click.echo(f"  {report.task}#{report.seq}  {when(report.at)}  "
                       f"{short(report.details, 120)}")  # fmt: skip
    if children.runs:
        more = " (the newest 20)" if children.next_cursor else ""
        click.echo(f"\nchildren{more}")
        click.echo(_runs_table(children.runs))
    click.echo("\ntimeline")
    steps = [(when(step.at), step.revision, step.previous or "-", step.status,
              step.reason or "", step.worker_id or "") for step in details.timeline]  # fmt: skip
    click.echo(table(("at", "rev", "from", "to", "reason", "worker"), steps))


@runs.command("watch", epilog=_RUN_HELP)
@server_url_option
@click.argument("run", required=False)
@click.option("--workflow", help="Updates of this workflow's runs.")
@click.option("--version", "version_", help="Only this version (with --workflow).")
@_statuses
@json_option
def watch_runs(
    server_url: str,
    run: str | None,
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
                click.echo(f"{when(update.at)}  {update.run_id}  {update.task}"
                           f"#{update.seq} progress {short(update.details, 120)}")  # fmt: skip
        elif as_json:
            click.echo(_UPDATE.encode(update).decode())
        else:
            click.echo(f"{when(update.at)}  {update.run_id}  {update.workflow}@{update.version}"
                       f"  r{update.revision}  {update.previous or '-'} -> {update.status}"
                       f"  {update.reason or ''}".rstrip())  # fmt: skip
        sys.stdout.flush()

    async def watch(client: Client) -> None:
        run_id = None if run is None else await run_id_of(client, run)
        if run_id is not None and not as_json:
            details = await client.describe_run(run_id)
            if details.unserved is not None:  # (a queued run: it would sit there silently)
                click.echo(f"(waiting: {details.unserved})")
            if details.gate is not None:  # (its update says when the gate lets it through)
                click.echo(f"(waiting at the gate: {details.gate.summary})")
        request = client.watch(
            run_id, workflow=workflow, version=version_,
            statuses=tuple(filter(is_status, statuses)),
            after_revision=0 if run_id else None, progress=True,
        )  # fmt: skip
        async with request as updates:
            async for update in updates:
                show(update)
                if run_id and isinstance(update, RunUpdate) and update.status in TERMINAL:
                    return

    call_server(server_url, watch)


_UPDATE: Final = WireCodec[RunUpdate](RunUpdate)
_PROGRESS: Final = WireCodec[TaskProgress](TaskProgress)


def _said(reply: RunsStopped | RunTransitioned | WokenUp) -> str:
    """A control command's reply as a sentence."""
    if isinstance(reply, WokenUp):
        sleeps = "1 sleep" if reply.sleeps == 1 else f"{reply.sleeps} sleeps"
        return f"run {reply.run_id}: {sleeps} cut short"
    said = f"run {reply.run_id} is {reply.status} now"
    if isinstance(reply, RunsStopped) and (others := len(reply.affected) - 1) > 0:
        said += f", and {others} of its descendants" if others > 1 else ", and 1 descendant"
    return said


def _control(name: str, summary: str, *, reason: str | None) -> click.Command:
    """A command that applies one control action to a run."""

    @click.command(name, help=summary, epilog=_RUN_HELP)
    @server_url_option
    @click.argument("run")
    @json_option
    def command(server_url: str, run: str, as_json: bool, **options: str) -> None:
        action = getattr(Client, name)

        async def act(client: Client) -> RunsStopped | RunTransitioned | WokenUp:
            reply: RunsStopped | RunTransitioned | WokenUp = await action(
                client, await run_id_of(client, run), **options
            )
            return reply

        reply = call_server(server_url, act)
        if as_json:
            dump(reply, type(reply))
        else:
            click.echo(_said(reply))

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


@runs.command("retry", epilog=f"{_RUN_HELP} Without RUN, --workflow retries in bulk.")
@server_url_option
@click.argument("run", required=False)
@click.option("--workflow", help="Retry the failed top-level runs of this workflow (bulk).")
@click.option("--version", "version_", help="Only runs of this version (with --workflow).")
@click.option("--status", type=click.Choice(["failed"]), default="failed", show_default=True,
              help="The runs to retry (only failed runs can be).")  # fmt: skip
@click.option("--since", type=_Since(), help="Only runs that failed since then: a duration "
              "ago (90s, 30m, 2h, 7d) or an ISO 8601 time (with --workflow).")  # fmt: skip
@click.option("--reason", default="retried", show_default=True)
@json_option
def retry_runs(
    server_url: str,
    run: str | None,
    workflow: str | None,
    version_: str | None,
    status: str,
    since: dt.datetime | None,
    reason: str,
    as_json: bool,
) -> None:
    """Queue failed runs again, after a fix: each is a fresh first attempt of its version
    that replays its completed tasks and runs its failed ones again (its failed children
    are retried with it). Give RUN, or --workflow for every failed run of it."""
    if (run is None) == (workflow is None):
        raise click.UsageError("give RUN, or --workflow (bulk), not both")
    if run is not None and (version_ or since):
        raise click.UsageError("--version and --since go with --workflow")

    async def retry(client: Client) -> RunsRetried:
        if run is not None:
            return await client.retry(await run_id_of(client, run), reason=reason)
        assert workflow is not None
        return await client.retry_failed(workflow, version=version_, failed_after=since,
                                         reason=reason)  # fmt: skip

    reply = call_server(server_url, retry)
    if as_json:
        dump(reply, RunsRetried)
        return
    children = len(reply.affected) - len(reply.run_ids)
    also = f", with {children} failed child run{'s' * (children != 1)}" if children else ""
    if run is not None:
        click.echo(f"run {reply.run_ids[0]} is queued again{also}")
    else:
        count = len(reply.run_ids)
        click.echo(f"{count} failed run{'s' * (count != 1)} of {workflow} queued again{also}")


@click.group()
def events() -> None:
    """Send events to runs."""


@events.command("send", epilog=_RUN_HELP)
@server_url_option
@click.argument("run")
@click.argument("name")
@click.argument("data", required=False, default="null")
@click.option("--reference-id", help="Deduplicate: a repeated reference ID is ignored.")
@json_option
def send_event(
    server_url: str, run: str, name: str, data: str, reference_id: str | None, as_json: bool
) -> None:
    """Send event NAME to RUN with DATA (JSON; default null)."""
    payload = _json_argument(data, "DATA")

    async def send(client: Client) -> EventSent:
        return await client.send_event(await run_id_of(client, run), name, payload,
                                       reference_id=reference_id)  # fmt: skip

    sent = call_server(server_url, send)
    if as_json:
        dump(sent, type(sent))
    else:
        note = " (duplicate: ignored)" if sent.duplicate else ""
        click.echo(f"sent {sent.name} #{sent.seq} to {sent.run_id}{note}")


@click.group()
def workers() -> None:
    """Inspect workers."""


@workers.command("list")
@server_url_option
@click.option("--all", "include_gone", is_flag=True, help="Also workers declared dead.")
@json_option
def list_workers(server_url: str, include_gone: bool, as_json: bool) -> None:
    """Registered workers: liveness, capacity, active runs."""
    found = call_server(server_url, lambda client: client.list_workers(include_gone=include_gone))
    if as_json:
        click.echo(orjson.dumps([_WORKER.unstructure(worker) for worker in found]).decode())
        return
    rows = [(worker.id, _worker_state(worker),
             f"{worker.active_runs}/{worker.concurrency}", when(worker.last_seen_at),
             ", ".join(worker.versions)) for worker in found]  # fmt: skip
    click.echo(table(("id", "state", "runs", "last seen", "serves"), rows))


def _worker_state(worker: WorkerInfo) -> str:
    if not worker.alive:
        return "gone"
    return "alive" if worker.connected else "disconnected"


_WORKER: Final = WireCodec[WorkerInfo](WorkerInfo)


@click.group()
def versions() -> None:
    """Inspect workflow versions."""


@versions.command("list")
@server_url_option
@click.option("--workflow", help="Only versions of this workflow.")
@json_option
def list_versions(server_url: str, workflow: str | None, as_json: bool) -> None:
    """Registered versions: their open runs by status and the live workers serving each.

    Runs stay on the version they started on: keep serving a version until its open runs
    have ended (UNSERVED says since when none has).
    """
    found = call_server(server_url, lambda client: client.list_versions(workflow=workflow))
    if as_json:
        click.echo(orjson.dumps([_VERSION.unstructure(version) for version in found]).decode())
        return
    rows = [(f"{version.workflow}@{version.version}",
             ", ".join(f"{status} {count}" for status, count in sorted(version.open_runs.items()))
             or "-", ", ".join(version.workers) or "-",
             when(version.unserved_since) if version.unserved_since else "-")
            for version in found]  # fmt: skip
    click.echo(table(("version", "open runs", "workers", "unserved since"), rows))


_VERSION: Final = WireCodec[VersionInfo](VersionInfo)
