"""The committer actor: concurrent transactions share commits, each caller gets its own
outcome, and a caller cancelled before its turn leaves nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import trio

from aiki.server._committer import Committer, committer_mailbox, transact
from tests._deadline import deadline
from transport import UniqueViolationError
from transport.postgres import PostgresStore, Transaction, open_postgres_store


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(pg_url, max_size=4) as opened:
        await opened.execute("CREATE TABLE items (id int PRIMARY KEY)")
        yield opened


def insert(key: int) -> Callable[[Transaction], int]:
    def work(tx: Transaction) -> int:
        tx.execute("INSERT INTO items VALUES (%s)", (key,))
        return key

    return work


@deadline(20)
async def test_concurrent_transactions_share_commits_and_each_gets_its_own_outcome(
    store: PostgresStore,
) -> None:
    """200 callers at once (one inserting a key already stored): far fewer batches than
    transactions, every caller gets its own result, the duplicate alone fails."""
    await store.execute("INSERT INTO items VALUES (1000)")
    mailbox = committer_mailbox()
    committer = Committer(store)
    results: dict[int, object] = {}

    async def call(key: int, row: int) -> None:
        try:
            results[key] = await transact(mailbox.address, insert(row))
        except UniqueViolationError as exc:
            results[key] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run, mailbox.inbox)
        async with trio.open_nursery() as callers:
            for key in range(200):
                callers.start_soon(call, key, 1000 if key == 199 else key)
        nursery.cancel_scope.cancel()
    stats = committer.statistics()
    assert stats.transactions == 200
    assert stats.batches < 100, stats
    assert stats.fallbacks >= 1  # the batch holding the duplicate ran one by one
    assert isinstance(results.pop(199), UniqueViolationError)
    assert results == {key: key for key in range(199)}
    rows = await store.fetch_all("SELECT count(*) FROM items")
    assert rows == [(200,)]


@deadline(20)
async def test_a_caller_cancelled_before_its_turn_stores_nothing(store: PostgresStore) -> None:
    """With the committer not yet running, a cancelled caller's transaction is dropped:
    once the committer starts, it never runs."""
    mailbox = committer_mailbox()
    committer = Committer(store)
    with trio.move_on_after(0.1) as scope:
        await transact(mailbox.address, insert(1))
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(committer.run, mailbox.inbox)
        assert await transact(mailbox.address, insert(2)) == 2
        nursery.cancel_scope.cancel()
    assert await store.fetch_all("SELECT id FROM items") == [(2,)]
    assert committer.statistics().transactions == 1
