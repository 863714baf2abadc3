"""PostgreSQL store against a real server: one thread hop per transaction, atomic commit
and rollback, errors mapped to transport types, and cancellation that settles the outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio

from tests._deadline import deadline
from tests._waiting import wait_until
from transport import (
    StorageError,
    StorageTimeoutError,
    StorageUnavailableError,
    UniqueViolationError,
)
from transport.local_services import free_port
from transport.postgres import PostgresStore, Transaction, open_postgres_store


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(pg_url, max_size=4) as opened:
        await opened.execute("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
        yield opened


@deadline(20)
async def test_a_transaction_commits_all_its_statements_together(store: PostgresStore) -> None:
    """Everything done in the function is visible afterwards; its return value comes back."""

    def insert_two(tx: Transaction) -> int:
        tx.execute("INSERT INTO items VALUES (%s, %s)", (1, "one"))
        tx.execute("INSERT INTO items VALUES (%s, %s)", (2, "two"))
        row = tx.fetch_one("SELECT count(*) FROM items")
        assert row is not None
        return int(str(row[0]))

    assert await store.transact(insert_two) == 2
    assert await store.fetch_all("SELECT id, label FROM items ORDER BY id") == [
        (1, "one"),
        (2, "two"),
    ]


@deadline(20)
async def test_a_failing_transaction_leaves_nothing_behind(store: PostgresStore) -> None:
    """An exception inside the function rolls back every statement before it."""

    def insert_then_fail(tx: Transaction) -> None:
        tx.execute("INSERT INTO items VALUES (1, 'one')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.transact(insert_then_fail)
    assert await store.fetch_all("SELECT * FROM items") == []


@deadline(20)
async def test_unique_violation_is_mapped_with_its_constraint_and_rolled_back(
    store: PostgresStore,
) -> None:
    """A duplicate key raises UniqueViolationError naming the constraint; nothing is half-stored."""
    await store.execute("INSERT INTO items VALUES (1, 'one')")

    def insert_duplicate(tx: Transaction) -> None:
        tx.execute("INSERT INTO items VALUES (2, 'two')")
        tx.execute("INSERT INTO items VALUES (1, 'again')")

    with pytest.raises(UniqueViolationError) as caught:
        await store.transact(insert_duplicate)
    assert caught.value.constraint == "items_pkey"
    assert caught.value.sqlstate == "23505"
    assert not caught.value.retryable
    assert await store.fetch_all("SELECT id FROM items") == [(1,)]


@deadline(20)
async def test_sql_errors_are_storage_errors_and_not_retryable(store: PostgresStore) -> None:
    """A syntax error is a StorageError with its SQLSTATE, never a psycopg exception."""
    with pytest.raises(StorageError) as caught:
        await store.execute("SELEKT 1")
    assert caught.value.sqlstate == "42601"
    assert not caught.value.retryable


@deadline(20)
async def test_statement_timeout_is_a_retryable_timeout(pg_url: str) -> None:
    """A statement past statement_timeout fails with StorageTimeoutError (retryable)."""
    async with open_postgres_store(pg_url, statement_timeout_seconds=0.2) as short:
        with pytest.raises(StorageTimeoutError) as caught:
            await short.execute("SELECT pg_sleep(5)")
    assert caught.value.retryable


@deadline(20)
async def test_an_unreachable_server_is_storage_unavailable() -> None:
    """Nothing listening: StorageUnavailableError (retryable), not a hang or a psycopg error."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    store = PostgresStore(url, connect_timeout_seconds=1)
    with pytest.raises(StorageUnavailableError) as caught:
        await store.open()
    assert caught.value.retryable
    await store.aclose()


@deadline(20)
async def test_cancelling_a_transaction_cancels_it_on_the_server_and_rolls_it_back(
    store: PostgresStore,
) -> None:
    """Cancel during a long statement: the server cancels it, the insert before it is rolled
    back, the call returns long before the statement would have (cap below its 30 s), and
    the pool stays usable."""

    def insert_then_sleep(tx: Transaction) -> None:
        tx.execute("INSERT INTO items VALUES (7, 'seven')")
        tx.execute("SELECT pg_sleep(30)")

    async def sleeping() -> bool:
        rows = await store.fetch_all(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%'"
            " AND state = 'active'"
        )
        return rows[0][0] == 1

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.transact, insert_then_sleep)
            await wait_until(sleeping)
            scope.cancel()
    assert scope.cancelled_caught
    assert not await sleeping()
    assert await store.fetch_all("SELECT * FROM items") == []
    assert await store.fetch_one("SELECT 1") == (1,)


@deadline(30)
async def test_concurrent_transactions_beyond_pool_size_all_complete(store: PostgresStore) -> None:
    """More concurrent callers than connections wait for a connection; none is lost."""
    async with trio.open_nursery() as nursery:
        for item in range(20):
            nursery.start_soon(store.execute, "INSERT INTO items VALUES (%s, %s)", (item, "x"))
    assert await store.fetch_one("SELECT count(*) FROM items") == (20,)
    stats = store.statistics()
    assert stats.max_size == 4
    assert stats.size <= 4


@deadline(20)
async def test_batches_with_copy_and_execute_many(store: PostgresStore) -> None:
    """COPY and executemany insert whole batches in one transaction."""

    def load(tx: Transaction) -> None:
        tx.copy_rows("items", ["id", "label"], [(i, f"c{i}") for i in range(100)])
        tx.execute_many(
            "INSERT INTO items VALUES (%s, %s)", [(i, f"m{i}") for i in range(100, 150)]
        )

    await store.transact(load)
    assert await store.fetch_one("SELECT count(*), max(id) FROM items") == (150, 149)


@deadline(20)
async def test_a_batch_commits_together_and_a_failing_member_leaves_only_itself_undone(
    store: PostgresStore,
) -> None:
    """One COMMIT for the whole batch; when a member raises, the others still commit
    (each alone) and the failing one stores nothing, exactly as if each ran by itself."""

    def insert(key: int) -> Callable[[Transaction], int]:
        def work(tx: Transaction) -> int:
            tx.execute("INSERT INTO items VALUES (%s, %s)", (key, f"item {key}"))
            return key

        return work

    results, fell_back = await store.transact_batch([insert(1), insert(2), insert(3)])
    assert ([r.unwrap() for r in results], fell_back) == ([1, 2, 3], False)

    def half_then_fail(tx: Transaction) -> int:
        tx.execute("INSERT INTO items VALUES (10, 'half')")
        raise LookupError("refused")

    batch = [insert(4), half_then_fail, insert(2), insert(5)]
    results, fell_back = await store.transact_batch(batch)
    assert fell_back
    assert (results[0].unwrap(), results[3].unwrap()) == (4, 5)
    with pytest.raises(LookupError, match="refused"):
        results[1].unwrap()
    with pytest.raises(UniqueViolationError):
        results[2].unwrap()
    rows = await store.fetch_all("SELECT id FROM items ORDER BY id")
    assert rows == [(1,), (2,), (3,), (4,), (5,)]
