"""The ``aiki`` command line.

- ``aiki dev module:worker``: databases, a server and a worker in one command;
- ``aiki server``: the server process (PostgreSQL and Redis given by URL);
- ``aiki worker module:worker``: a worker process serving the workflows of ``worker``;
- ``aiki services``: a local PostgreSQL and Redis, kept up until interrupted;
- ``aiki limits ...``: concurrency limits (`_limits`);
- ``aiki runs|events|workers|versions|schedules ...``: operators' commands (`_runs`, `_schedules`);
- ``aiki keys ...``: API keys (`_keys`).

Each command's module is imported only when the command is invoked (``aiki runs list``
loads no server, no database driver), or when ``aiki --help`` lists them all. Every
setting has an environment variable besides its option (``docs/configuration.md``);
``AIKI_API_KEY`` is the key workers and commands act with.
"""

from __future__ import annotations

import importlib
from typing import Final

import click

from .. import __version__

COMMANDS: Final = {
    "dev": "._serve:dev",
    "events": "._runs:events",
    "keys": "._keys:keys",
    "limits": "._limits:limits",
    "runs": "._runs:runs",
    "schedules": "._schedules:schedules",
    "server": "._serve:server",
    "services": "._serve:services",
    "worker": "._serve:worker",
    "versions": "._runs:versions",
    "workers": "._runs:workers",
}
"""Each command and where it is defined (``module:attribute``, relative to this package)."""


class _LazyGroup(click.Group):
    """A group whose commands are imported when first wanted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module, __package__), attribute)
        assert isinstance(command, click.Command), where
        return command


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="aiki")
def main() -> None:
    """Aiki: durable workflows as ordinary async Python."""
