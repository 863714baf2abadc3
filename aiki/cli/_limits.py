"""``aiki limits``: the namespace's concurrency limits, and changing their numbers.

Limits are declared in code (``@wf.version(..., limits=[aiki.ConcurrencyLimit(...)])``)
and registered by workers; an operator changes a limit's numbers here at run time (an
admin key), and the change holds until a registration declares other numbers.
"""

from __future__ import annotations

from typing import Final

import click
import orjson

from ..protocol import LimitInfo
from ..wire import WireCodec
from ._common import call_server, json_option, server_url_option, table, when

_INFO: Final = WireCodec[LimitInfo](LimitInfo)


def _bound(value: int | None) -> str:
    return "-" if value is None else str(value)


@click.group()
def limits() -> None:
    """Inspect and change concurrency limits."""


@limits.command("list")
@server_url_option
@json_option
def list_limits(server_url: str, as_json: bool) -> None:
    """Every limit: per key and over all keys (as declared, if an operator changed it),
    and the runs holding and waiting for its slots now."""
    found = call_server(server_url, lambda client: client.list_limits())
    if as_json:
        click.echo(orjson.dumps([_INFO.unstructure(limit) for limit in found]).decode())
        return
    rows = [(limit.name, limit.per_key, _bound(limit.total),
             f"{limit.declared_per_key}/{_bound(limit.declared_total)}", limit.holding,
             limit.waiting) for limit in found]  # fmt: skip
    click.echo(table(("limit", "per key", "total", "declared", "holding", "waiting"), rows)
               if rows else "no concurrency limits declared")  # fmt: skip


@limits.command("show")
@server_url_option
@click.argument("name")
@json_option
def show_limit(server_url: str, name: str, as_json: bool) -> None:
    """One limit, with its latest changes and who made them."""
    (limit,) = call_server(server_url, lambda client: client.list_limits(name))
    if as_json:
        click.echo(orjson.dumps(_INFO.unstructure(limit)).decode())
        return
    _show(limit)


@limits.command("set")
@server_url_option
@click.argument("name")
@click.option("--per-key", type=click.IntRange(min=1), required=True,
              help="Runs of one key holding a slot at once, at most.")  # fmt: skip
@click.option(
    "--total",
    type=click.IntRange(min=1),
    help="Runs holding a slot at once over all keys, at most (default: no bound).",
)
@json_option
def set_limit(server_url: str, name: str, per_key: int, total: int | None, as_json: bool) -> None:
    """Change limit NAME's numbers now (an admin key; kept in the limit's changes). They
    hold until a worker registers other numbers than those last declared."""
    limit = call_server(
        server_url, lambda client: client.set_limit(name, per_key=per_key, total=total)
    )
    if as_json:
        click.echo(orjson.dumps(_INFO.unstructure(limit)).decode())
        return
    _show(limit)


def _show(limit: LimitInfo) -> None:
    fields = [("limit", limit.name), ("per key", limit.per_key), ("total", _bound(limit.total)),
              ("declared", f"per key {limit.declared_per_key}, total "
                           f"{_bound(limit.declared_total)}"),
              ("holding", limit.holding), ("waiting", limit.waiting)]  # fmt: skip
    click.echo("\n".join(f"{name.ljust(8)}  {value}" for name, value in fields))
    if limit.changes:
        click.echo("\nchanges")
        click.echo(table(("at", "per key", "total", "by"), [
            (when(change.at), change.per_key, _bound(change.total), change.changed_by)
            for change in limit.changes]))  # fmt: skip
