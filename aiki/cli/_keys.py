"""``aiki keys``: create, list and revoke API keys; ``whoami``.

The first admin key is made with ``aiki keys create --bootstrap``, which writes to the
database directly (``AIKI_DATABASE_URL``): whoever can do that owns the server anyway.
Every other key is made through the server, with an admin key.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Final

import click
import orjson
import trio

from transport import TransportError
from transport.migrations import apply_migrations
from transport.postgres import open_postgres_store

from ..protocol import KeyCreated, KeyInfo, Role
from ..wire import WireCodec
from ._common import call_server, json_option, server_url_option, table, when

if TYPE_CHECKING:
    from ..client import Client

ROLES: Final = ("viewer", "client", "worker", "admin")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CREATED: Final = WireCodec[KeyCreated](KeyCreated)
_INFO: Final = WireCodec[KeyInfo](KeyInfo)


def seconds_of(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds, in seconds.

    Raises:
        click.BadParameter: anything else.
    """
    found = _DURATION.fullmatch(text.strip())
    if found is None or float(found.group(1)) <= 0:
        raise click.BadParameter(f"expected a duration like 90d, 12h, 30m or 45s, got {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _state(key: KeyInfo) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= dt.datetime.now(dt.UTC):
        return "expired"
    return "active"


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (an admin key's work)."""


@keys.command("create")
@server_url_option
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the key may do.")
@click.option(
    "--namespace",
    default=None,
    help="Where the key acts [default: 'default'; an admin key: every namespace].",
)
@click.option("--name", default="", help="Who or what holds the key (listings, audit log).")
@click.option("--expires-in", default=None, help="Lifetime: 90d, 12h, 30m (default: none).")
@click.option(
    "--bootstrap",
    is_flag=True,
    help="Write the key to the database directly (the first admin key; needs --database-url).",
)
@click.option(
    "--database-url",
    envvar="AIKI_DATABASE_URL",
    default=None,
    help="PostgreSQL URL, for --bootstrap [env AIKI_DATABASE_URL].",
)
@json_option
def create_key(
    server_url: str,
    role: Role,
    namespace: str | None,
    name: str,
    expires_in: str | None,
    bootstrap: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it (once: only its hash is kept)."""
    if namespace is None and role != "admin":
        namespace = "default"
    seconds = None if expires_in is None else seconds_of(expires_in)
    if bootstrap:
        if database_url is None:
            raise click.UsageError("--bootstrap writes to the database: give --database-url "
                                   "(or AIKI_DATABASE_URL)")  # fmt: skip
        created = _bootstrap(database_url, role, namespace, name, seconds)
    else:

        async def create(client: Client) -> KeyCreated:
            return await client.create_key(role, namespace=namespace, name=name,
                                           expires_in_seconds=seconds)  # fmt: skip

        created = call_server(server_url, create)
    if as_json:
        click.echo(_CREATED.encode(created).decode())
        return
    info = created.info
    where = info.namespace or "every namespace"
    click.echo(f"created {info.role} key {info.prefix} for {where}"
               + (f", expires {when(info.expires_at)}" if info.expires_at else "")
               + "; it is shown only now:", err=True)  # fmt: skip
    click.echo(created.key)


def _bootstrap(
    database_url: str, role: Role, namespace: str | None, name: str, seconds: float | None
) -> KeyCreated:
    from ..errors import ValidationError
    from ..server import migrations
    from ..server.operations.keys import check_key_request
    from ..server.store import keys as stored

    try:
        check_key_request(role, namespace)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--namespace") from None

    expires_at = None if seconds is None else dt.datetime.now(dt.UTC) + dt.timedelta(
        seconds=seconds)  # fmt: skip

    async def main() -> KeyCreated:
        async with open_postgres_store(database_url, max_size=1) as store:
            await apply_migrations(store, migrations())
            key, info = await store.transact(lambda tx: stored.create(
                tx, role=role, namespace=namespace, name=name, expires_at=expires_at))  # fmt: skip
            return KeyCreated(key=key, info=info)

    try:
        return trio.run(main)
    except TransportError as exc:
        raise click.ClickException(f"cannot write the key to the database: {exc}") from None


@keys.command("list")
@server_url_option
@click.option("--active", is_flag=True, help="Leave out revoked keys.")
@json_option
def list_keys(server_url: str, active: bool, as_json: bool) -> None:
    """Every key: prefix, role, namespace, state, last use, expiry."""
    found = call_server(server_url, lambda client: client.list_keys(include_revoked=not active))
    if as_json:
        click.echo(orjson.dumps([_INFO.unstructure(key) for key in found]).decode())
        return
    rows = [(key.prefix, key.role, key.namespace or "*", _state(key), key.name,
             when(key.last_used_at), when(key.expires_at)) for key in found]  # fmt: skip
    click.echo(table(("prefix", "role", "namespace", "state", "name", "last used", "expires"),
                     rows))  # fmt: skip


@keys.command("revoke")
@server_url_option
@click.argument("prefix")
def revoke_key(server_url: str, prefix: str) -> None:
    """Revoke the key PREFIX on every server (within a second)."""
    revoked = call_server(server_url, lambda client: client.revoke_key(prefix))
    click.echo(f"revoked {revoked.role} key {revoked.prefix} ({revoked.name or 'unnamed'})")


@keys.command("whoami")
@server_url_option
def whoami(server_url: str) -> None:
    """The key the server takes this command's for."""
    found = call_server(server_url, lambda client: client.whoami())
    if not found.authenticated:
        click.echo("no key needed: the server runs without authentication")
        return
    click.echo(f"key {found.prefix} ({found.name or 'unnamed'}): {found.role} in "
               f"{found.namespace or 'every namespace'}")  # fmt: skip
