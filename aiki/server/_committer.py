"""The committer: transactions that arrive together share one thread hop and one COMMIT.

Every `PostgresStore.transact` costs a hop to a worker thread, a BEGIN and a COMMIT
(with its WAL flush). Under load the server has many short transactions in flight at
once (starts, claims, task records, transitions); the committer takes whatever waits
in its mailbox (up to a batch) and runs it as one transaction. Unloaded, a batch holds
one transaction: nothing lingers waiting for company.

A batch is all or nothing only for speed: if any transaction in it raises, the batch
is rolled back and each transaction runs again alone (`PostgresStore.transact_batch`),
so every caller gets the outcome its transaction would have had by itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import attrs
import outcome
import trio

from actors import Address, Mailbox
from transport import StorageError, StorageUnavailableError
from transport.postgres import PostgresStore, Transaction

T = TypeVar("T")

MAX_BATCH: Final = 64
MAILBOX_CAPACITY: Final = 4096


@attrs.define(eq=False)
class Commit(Generic[T]):
    """One caller's transaction, from the mailbox to its outcome."""

    work: Callable[[Transaction], T]
    done: trio.Event = attrs.Factory(trio.Event)
    result: outcome.Outcome[T] | None = None
    taken: bool = False
    """The committer started it: its outcome is settled only once ``done`` is set."""
    abandoned: bool = False
    """Its caller was cancelled before the committer took it: it is skipped."""


@attrs.frozen
class CommitterStatistics:
    """Counters since start."""

    transactions: int
    batches: int
    fallbacks: int
    """Batches rolled back because one of their transactions raised (each then ran alone)."""


def committer_mailbox() -> Mailbox[Commit[object]]:
    """The committer's mailbox (large: every request handler may have one waiting)."""
    return Mailbox[Commit[object]]("committer", capacity=MAILBOX_CAPACITY)


async def transact(address: Address[Commit[object]], work: Callable[[Transaction], T]) -> T:
    """Have the committer run ``work`` in a transaction, possibly with others', and return
    its result; raises what `PostgresStore.transact` raises for it.

    ``work`` may run twice (in a batch rolled back because of another transaction, then
    alone): like any ``transact`` work, it must only use the `Transaction`.

    Cancellation: before the committer takes the transaction, it is dropped and
        `trio.Cancelled` is raised at once; once taken, the call waits until its batch
        has committed or rolled back, then raises `trio.Cancelled`.
    """
    commit = Commit(work)
    await address.send(commit)  # type: ignore[arg-type]
    try:
        await commit.done.wait()
    except trio.Cancelled:
        if not commit.taken:
            commit.abandoned = True
            raise
        with trio.CancelScope(shield=True):
            await commit.done.wait()
        raise
    assert commit.result is not None
    return commit.result.unwrap()


@attrs.define
class Committer:
    """Actor: runs the transactions sent with `transact` in batches on ``store``."""

    store: PostgresStore
    max_batch: int = MAX_BATCH
    _transactions: int = 0
    _batches: int = 0
    _fallbacks: int = 0

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[Commit[object]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Commit batches until the mailbox closes (a batch under way is finished first)."""
        task_status.started()
        async for first in inbox:
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = [commit for commit in batch if not commit.abandoned]
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[Commit[object]]) -> None:
        for commit in batch:
            commit.taken = True
        try:
            # Shielded: a batch is short (statement_timeout bounds it), and its callers
            # get their exact outcomes even while the committer is being stopped.
            with trio.CancelScope(shield=True):
                results, fell_back = await self.store.transact_batch([c.work for c in batch])
        except StorageError as exc:
            # No connection, or the COMMIT failed: each caller gets the error, as it would
            # alone; the committer goes on (an outage is not its failure).
            for commit in batch:
                commit.result = outcome.Error(copy.copy(exc))
                commit.done.set()
            return
        except BaseException as exc:
            lost = StorageUnavailableError(f"the transaction's outcome is unknown: {exc!r}")
            for commit in batch:
                commit.result = outcome.Error(copy.copy(lost))
                commit.done.set()
            raise
        self._transactions += len(batch)
        self._batches += 1
        self._fallbacks += fell_back
        for commit, result in zip(batch, results, strict=True):
            commit.result = result
            commit.done.set()

    def statistics(self) -> CommitterStatistics:
        """The counters now."""
        return CommitterStatistics(self._transactions, self._batches, self._fallbacks)
