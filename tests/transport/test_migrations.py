"""Numbered SQL migrations: applied once, in order, atomically, under an advisory lock;
edited or unknown migrations are refused."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from tests._deadline import deadline
from transport import MigrationError
from transport.migrations import Migration, apply_migrations, apply_migrations_sync, load_migrations
from transport.postgres import open_postgres_store

FIRST = Migration(1, "create_runs", "CREATE TABLE runs (id text PRIMARY KEY);")
SECOND = Migration(2, "add_status", "ALTER TABLE runs ADD COLUMN status text;")


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_migrations_apply_in_order_once(pg_url: str) -> None:
    """Pending migrations run in version order and are recorded; a second run does nothing."""
    assert apply_migrations_sync(pg_url, [SECOND, FIRST]) == [1, 2]
    assert apply_migrations_sync(pg_url, [FIRST, SECOND]) == []
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO runs (id, status) VALUES ('r1', 'queued')")
        versions = conn.execute("SELECT version, name FROM aiki_schema_migrations ORDER BY 1")
        assert versions.fetchall() == [(1, "create_runs"), (2, "add_status")]


def test_a_failing_migration_applies_nothing(pg_url: str) -> None:
    """All pending migrations share one transaction: one failure leaves the schema untouched."""
    broken = Migration(2, "broken", "ALTER TABLE nowhere ADD COLUMN x int;")
    with pytest.raises(MigrationError, match="0002_broken failed"):
        apply_migrations_sync(pg_url, [FIRST, broken])
    assert _tables(pg_url) == set()


def test_an_edited_migration_is_refused(pg_url: str) -> None:
    """Changing an applied migration's SQL is detected by its checksum."""
    apply_migrations_sync(pg_url, [FIRST])
    edited = Migration(1, "create_runs", "CREATE TABLE runs (id bigint PRIMARY KEY);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations_sync(pg_url, [edited])


def test_a_database_newer_than_the_code_is_refused(pg_url: str) -> None:
    """Versions in the database that the code does not have mean a newer deploy migrated it."""
    apply_migrations_sync(pg_url, [FIRST, SECOND])
    with pytest.raises(MigrationError, match="does not know"):
        apply_migrations_sync(pg_url, [FIRST])


def test_migration_files_are_loaded_and_validated(tmp_path: Path) -> None:
    """Files named NNNN_name.sql load in version order; other names and duplicates fail."""
    (tmp_path / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "README.md").write_text("ignored")
    loaded = load_migrations(tmp_path)
    assert [(m.version, m.name, m.sql) for m in loaded] == [
        (1, "first", "SELECT 1;"),
        (2, "second", "SELECT 2;"),
    ]
    (tmp_path / "0002_again.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="two migrations are numbered 0002"):
        load_migrations(tmp_path)
    (tmp_path / "0002_again.sql").unlink()
    (tmp_path / "3_bad-name.sql").write_text("SELECT 4;")
    with pytest.raises(MigrationError, match=r"not named NNNN_name\.sql"):
        load_migrations(tmp_path)


@deadline(30)
async def test_concurrent_runners_apply_each_migration_exactly_once(pg_url: str) -> None:
    """Several processes starting at once serialise on the advisory lock."""
    results: list[list[int]] = []
    async with open_postgres_store(pg_url, max_size=4) as store:

        async def run() -> None:
            results.append(await apply_migrations(store, [FIRST, SECOND]))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(run)
    assert sorted(results) == [[], [], [], [1, 2]]
