"""Numbered plain-SQL schema migrations, applied in order under an advisory lock.

Migrations are files named ``NNNN_description.sql`` in a directory (or package
resource folder) that the caller passes in; `transport` does not know what schema a
product needs. They are applied in one transaction, after taking a transaction-level
advisory lock, so concurrent starters (several server instances, parallel test
sessions) serialise: the first applies, the others find nothing left to do. A
migration changed after it was applied, or a database newer than the code, is an error
rather than something to guess about.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Final

import attrs
import psycopg

from ._errors import MigrationError
from .postgres import Transaction, mapped_errors

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from importlib.resources.abc import Traversable

    from .postgres import PostgresStore

DEFAULT_TABLE: Final = "aiki_schema_migrations"
LOCK_KEY: Final = 0x41494B49  # "AIKI": the advisory lock all migration runs share

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    """One numbered SQL script."""

    version: int
    name: str
    sql: str = attrs.field(repr=False)

    @property
    def checksum(self) -> str:
        """SHA-256 of the script, recorded when applied to detect later edits."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable) -> list[Migration]:
    """Read every ``NNNN_name.sql`` in ``directory``, sorted by version.

    Raises:
        MigrationError: a file name that does not follow the pattern, or a duplicate
            version number.
    """
    migrations: dict[int, Migration] = {}
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"two migrations are numbered {version:04d}")
        migrations[version] = Migration(version, match.group(2), entry.read_text("utf-8"))
    return [migrations[version] for version in sorted(migrations)]


def _apply(tx: Transaction, migrations: Sequence[Migration], table: str) -> list[int]:
    tx.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {
        int(str(version)): str(checksum)
        for version, checksum in tx.fetch_all(f"SELECT version, checksum FROM {table}")
    }
    known = {migration.version: migration for migration in migrations}
    if unknown := sorted(set(applied) - set(known)):
        raise MigrationError(
            f"the database has migrations this code does not know ({unknown}); "
            "it was migrated by a newer version"
        )
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
            continue
        try:
            tx.execute(migration.sql)
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}",
                sqlstate=exc.sqlstate,
            ) from exc
        tx.execute(
            f"INSERT INTO {table} (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )
        done.append(migration.version)
    return done


def _check_table_name(table: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
        raise ValueError(f"invalid migrations table name {table!r}")


def apply_migrations_sync(
    url: str, migrations: Iterable[Migration], *, table: str = DEFAULT_TABLE
) -> list[int]:
    """Apply pending ``migrations`` to the database at ``url`` (blocking); return their versions.

    For synchronous callers such as a pytest session fixture. All pending migrations
    are applied in one transaction: either all of them or none.

    Raises:
        MigrationError: see the module docstring.
        StorageUnavailableError: the database could not be reached.
    """
    _check_table_name(table)
    ordered = sorted(migrations, key=lambda migration: migration.version)
    with (
        mapped_errors(),
        psycopg.connect(url, connect_timeout=10) as connection,
        connection.transaction(),
    ):
        return _apply(Transaction(connection), ordered, table)


async def apply_migrations(
    store: PostgresStore, migrations: Iterable[Migration], *, table: str = DEFAULT_TABLE
) -> list[int]:
    """Apply pending ``migrations`` through ``store``; return the versions applied.

    Raises:
        MigrationError: see the module docstring.
        StorageUnavailableError: the database could not be reached.
    """
    _check_table_name(table)
    ordered = sorted(migrations, key=lambda migration: migration.version)
    return await store.transact(lambda tx: _apply(tx, ordered, table))
