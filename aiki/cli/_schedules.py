"""``aiki schedules activate|list|show|pause|resume|deactivate``: schedules from the shell.

Same conventions as the other operator commands (`aiki.cli._common`): tables for people,
``--json`` for scripts, exit codes 1 refused / 2 bad usage / 3 not found / 4 unreachable.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

import click
import orjson

from ..client import Client
from ..protocol import (
    ActivateSchedule,
    ScheduleActivated,
    ScheduleDetails,
    ScheduleInfo,
    SchedulePage,
    SchedulePolicy,
    ScheduleSpec,
    StartOptions,
    describe,
    is_schedule_status,
)
from ._common import call_server, dump, json_option, server_url_option, short, table, when

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

STATUSES: Final = ("active", "paused", "deactivated")


@click.group()
def schedules() -> None:
    """Activate, inspect and control schedules."""


@schedules.command("activate")
@server_url_option
@click.argument("workflow")
@click.argument("version")
@click.argument("data", required=False, default="null")
@click.option("--cron", help="Cron expression (5 fields, or 6 with leading seconds).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA timezone of --cron.")
@click.option("--every", type=click.FloatRange(min=0), help="Interval in seconds.")
@click.option("--overlap", type=click.Choice(["allow", "skip", "cancel_previous"]),
              default="allow", show_default=True)  # fmt: skip
@click.option("--catchup", type=click.Choice(["skip", "latest", "all"]), default="skip",
              show_default=True, help="What to run of occurrences missed while down.")  # fmt: skip
@click.option("--catchup-window", type=click.FloatRange(min=0), default=86400.0,
              show_default=True, help="Seconds back that latest/all look.")  # fmt: skip
@click.option("--jitter", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds each occurrence may be delayed by (fixed per occurrence).")  # fmt: skip
@click.option("--pool", help="Run on workers serving this pool.")
@click.option("--reference-id", help="Find the schedule by this name; guards its definition.")
@click.option("--return-existing", is_flag=True,
              help="With --reference-id: return the existing one even if it differs.")  # fmt: skip
@json_option
def activate(
    server_url: str,
    workflow: str,
    version: str,
    data: str,
    cron: str | None,
    timezone: str,
    every: float | None,
    overlap: str,
    catchup: str,
    catchup_window: float,
    jitter: float,
    pool: str | None,
    reference_id: str | None,
    return_existing: bool,
    as_json: bool,
) -> None:
    """Start WORKFLOW VERSION with input DATA (JSON; default null) on --cron or --every.

    Activating the same definition again returns the existing schedule.
    """
    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="DATA") from None
    request = ActivateSchedule(
        workflow=workflow, version=version, input=payload,
        spec=ScheduleSpec(cron=cron, timezone=timezone, every_seconds=every),
        policy=SchedulePolicy(overlap=overlap, catchup=catchup,  # type: ignore[arg-type]
                              catchup_window_seconds=catchup_window, jitter_seconds=jitter),
        options=StartOptions(pool=pool), reference_id=reference_id,
        conflict="return_existing" if return_existing else "error",
    )  # fmt: skip
    activated = call_server(server_url, lambda c: c.call(request))
    if as_json:
        dump(activated, ScheduleActivated)
        return
    info = activated.schedule
    state = "activated" if activated.created else "exists already"
    click.echo(f"schedule {info.id} {state}: {info.description}, next {when(info.next_fire_at)}")


@schedules.command("list")
@server_url_option
@click.option("--workflow", help="Only schedules of this workflow.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only schedules in this status (repeatable).")  # fmt: skip
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", help="The next page (printed after a full page).")
@json_option
def list_schedules(
    server_url: str,
    workflow: str | None,
    statuses: tuple[str, ...],
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Schedules, newest first."""
    page = call_server(server_url, lambda client: client.list_schedules(
        workflow=workflow, statuses=tuple(filter(is_schedule_status, statuses)),
        limit=limit, cursor=cursor))  # fmt: skip
    if as_json:
        dump(page, SchedulePage)
        return
    rows = [(info.id, f"{info.workflow}@{info.version}", info.status, info.description,
             when(info.next_fire_at), info.fired, info.skipped, info.reference_id or "-")
            for info in page.schedules]  # fmt: skip
    click.echo(table(("id", "workflow", "status", "when", "next", "fired", "skipped",
                       "reference"), rows))  # fmt: skip
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def _lookup(key: str) -> dict[str, str]:
    """A schedule ID, or else a reference ID."""
    try:
        uuid.UUID(key)
    except ValueError:
        return {"reference_id": key}
    return {"schedule_id": key}


@schedules.command("show")
@server_url_option
@click.argument("schedule")
@click.option("--upcoming", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option("--runs", "recent_runs", default=10, show_default=True,
              type=click.IntRange(0, 500))  # fmt: skip
@json_option
def show_schedule(
    server_url: str, schedule: str, upcoming: int, recent_runs: int, as_json: bool
) -> None:
    """One schedule (by ID or reference ID): definition, counts, next fire times, last runs."""

    async def describe_it(client: Client) -> ScheduleDetails:
        return await client.describe_schedule(**_lookup(schedule), upcoming=upcoming,
                                              recent_runs=recent_runs)  # fmt: skip

    details = call_server(server_url, describe_it)
    if as_json:
        dump(details, ScheduleDetails)
        return
    info = details.schedule
    policy = info.policy
    fields = [
        ("schedule", info.id), ("workflow", f"{info.workflow}@{info.version}"),
        ("status", info.status), ("when", describe(info.spec)),
        ("overlap", policy.overlap),
        ("catch-up", f"{policy.catchup} (window {policy.catchup_window_seconds:g} s)"),
        ("jitter", f"{policy.jitter_seconds:g} s"), ("reference", info.reference_id or "-"),
        ("input", short(info.input, 200)), ("pool", info.options.pool or "-"),
        ("fired", info.fired), ("skipped", info.skipped),
        ("last fired", when(info.last_fired_at)), ("created", when(info.created_at)),
    ]  # fmt: skip
    width = max(len(name) for name, _ in fields)
    click.echo("\n".join(f"{name.ljust(width)}  {value}" for name, value in fields))
    click.echo("\nnext fire times")
    click.echo("\n".join(f"  {when(moment)}" for moment in details.upcoming) or "  (none)")
    click.echo("\nlast runs")
    rows = [(run.id, when(run.occurrence), run.status, when(run.updated_at))
            for run in details.recent_runs]  # fmt: skip
    click.echo(table(("run", "occurrence", "status", "updated"), rows) if rows else "  (none)")


_ACTIONS: Final[dict[str, Callable[[Client, str], Awaitable[ScheduleInfo]]]] = {
    "pause": Client.pause_schedule,
    "resume": Client.resume_schedule,
    "deactivate": Client.deactivate_schedule,
}


def _control(name: str, summary: str) -> click.Command:
    """A command that pauses, resumes or deactivates one schedule."""

    @click.command(name, help=f"{summary} SCHEDULE: its ID or its reference ID.")
    @server_url_option
    @click.argument("schedule")
    @json_option
    def command(server_url: str, schedule: str, as_json: bool) -> None:
        action = _ACTIONS[name]

        async def act(client: Client) -> ScheduleInfo:
            lookup = _lookup(schedule)
            if "schedule_id" in lookup:
                return await action(client, lookup["schedule_id"])
            found = await client.describe_schedule(**lookup, upcoming=0, recent_runs=0)
            return await action(client, found.schedule.id)

        info = call_server(server_url, act)
        if as_json:
            dump(info, ScheduleInfo)
        else:
            click.echo(f"schedule {info.id} is {info.status}; next {when(info.next_fire_at)}")

    return command


schedules.add_command(_control("pause", "Stop a schedule firing until resumed."))
schedules.add_command(_control("resume", "Fire again from the next occurrence after now."))
schedules.add_command(_control("deactivate", "Stop a schedule for good (runs untouched)."))
