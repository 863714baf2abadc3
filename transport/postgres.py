"""PostgreSQL from trio: psycopg's documented sync API and psycopg_pool, in threads.

This package is the only place that imports psycopg. A whole transaction runs in one
thread hop: callers pass a function that receives a `Transaction` and runs there.
psycopg errors are mapped to `transport` errors on the way out, so the layers above
never see a psycopg exception.

Cancelling a call sends PostgreSQL a cancel request for the running statement and
waits for the thread, so when the caller sees `trio.Cancelled`, the transaction has
either committed or been rolled back; it is never left running unobserved.
``statement_timeout`` (set on every pooled connection) bounds a stuck statement.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, TypeVar

import attrs
import outcome
import psycopg
import psycopg.conninfo
import psycopg.errors
import psycopg.sql
import psycopg_pool
import trio

from ._errors import (
    StorageConflictError,
    StorageError,
    StorageTimeoutError,
    StorageUnavailableError,
    UniqueViolationError,
)
from ._threads import run_sync_interruptible

T = TypeVar("T")

Row = tuple[object, ...]
"""A result row: column values in SELECT order."""

Params = Sequence[object] | Mapping[str, object]
"""Statement parameters: positional for ``%s`` placeholders, or a mapping for ``%(name)s``."""

logger = logging.getLogger(__name__)

_CANCEL_RETRY_SECONDS: Final = 0.005


TRANSIENT_CLASSES: Final = frozenset({"08", "53", "57", "58"})
"""SQLSTATE classes of operational errors that may pass: connection exceptions,
insufficient resources, operator intervention, system errors. Other operational errors
(54 program limit exceeded, 55 object not in prerequisite state) are permanent."""


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Translate psycopg and psycopg_pool exceptions raised inside the block."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise UniqueViolationError(
            f"duplicate key: {exc.diag.message_detail or exc}",
            sqlstate=exc.sqlstate,
            constraint=exc.diag.constraint_name,
        ) from exc
    except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
        raise StorageConflictError(f"transaction conflict: {exc}", sqlstate=exc.sqlstate) from exc
    except psycopg.errors.QueryCanceled as exc:
        raise StorageTimeoutError(f"statement cancelled: {exc}", sqlstate=exc.sqlstate) from exc
    except (psycopg.errors.AdminShutdown, psycopg.errors.CannotConnectNow) as exc:
        raise StorageUnavailableError(
            f"postgres unavailable: {exc}", sqlstate=exc.sqlstate
        ) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        if sqlstate is not None and sqlstate[:2] not in TRANSIENT_CLASSES:
            # e.g. 54000 program limit exceeded (an index row too large): the same
            # statement fails the same way every time.
            raise StorageError(f"postgres refused: {exc}", sqlstate=sqlstate) from exc
        raise StorageUnavailableError(f"postgres unavailable: {exc}", sqlstate=sqlstate) from exc
    except psycopg.Error as exc:
        raise StorageError(f"postgres error: {exc}", sqlstate=exc.sqlstate) from exc


_CURSOR_NAMES: Final = itertools.count()
"""Names of server-side cursors (unique within a connection)."""


class Transaction:
    """One open transaction, used from the store's worker thread (blocking calls).

    Commits when the function given to `PostgresStore.transact` returns, rolls back
    when it raises. Parameters use psycopg placeholders (``%s`` / ``%(name)s``).
    """

    def __init__(self, connection: psycopg.Connection[Row]) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement; return the number of rows it affected."""
        return self._connection.execute(sql, params).rowcount

    def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run a query and return every row."""
        return self._connection.execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: Params | None = None) -> Row | None:
        """Run a query and return its first row, or None."""
        return self._connection.execute(sql, params).fetchone()

    def read_while(
        self, sql: str, params: Params | None, take: Callable[[Row], bool], *, batch: int = 16
    ) -> tuple[list[Row], bool]:
        """Run a query and read its rows a batch at a time (a server-side cursor) while
        ``take`` accepts them. Return the rows taken and whether one was refused; rows after
        the refused one's batch are never read (for an index-ordered query, never made)."""
        name = f"aiki_read_{next(_CURSOR_NAMES)}"
        with self._connection.cursor(name=name) as cursor:
            cursor.itersize = batch
            cursor.execute(sql, params)
            taken: list[Row] = []
            for row in cursor:
                if not take(row):
                    return taken, True
                taken.append(row)
        return taken, False

    def execute_many(self, sql: str, params_seq: Iterable[Params]) -> None:
        """Run one statement for each parameter set (pipelined by psycopg)."""
        with self._connection.cursor() as cursor:
            cursor.executemany(sql, params_seq)

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        """Bulk-insert rows with ``COPY``, the fastest path for batches."""
        statement = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
            psycopg.sql.Identifier(table),
            psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(column) for column in columns),
        )
        with self._connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """Connection-pool counters for health endpoints and benchmarks."""

    size: int
    available: int
    waiting: int
    max_size: int


class PostgresStore:
    """A pool of PostgreSQL connections driven from trio, one thread hop per transaction.

    Args:
        url: a libpq URL or conninfo string.
        min_size: connections kept open.
        max_size: at most this many connections, and as many concurrent transactions.
        statement_timeout_seconds: the server cancels any statement running longer.
        connect_timeout_seconds: how long to wait for a connection (from the server or
            the pool) before failing with `StorageUnavailableError`.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        statement_timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 5.0,
        name: str = "aiki",
    ) -> None:
        self.url = url
        self._connect_timeout_seconds = connect_timeout_seconds
        self._limiter = trio.CapacityLimiter(max_size)
        self._cancel_limiter = trio.CapacityLimiter(max_size)
        timeout_ms = int(statement_timeout_seconds * 1000)
        # Keep options the URL already carries (e.g. a search_path), add the timeout.
        url_options = psycopg.conninfo.conninfo_to_dict(url).get("options") or ""
        options = f"{url_options} -c statement_timeout={timeout_ms}".strip()
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = (
            psycopg_pool.ConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                open=False,
                name=name,
                timeout=connect_timeout_seconds,
                kwargs={
                    "connect_timeout": max(1, int(connect_timeout_seconds)),
                    "application_name": name,
                    "options": options,
                },
            )
        )

    async def open(self, *, wait: bool = True) -> None:
        """Open the pool; with ``wait``, until ``min_size`` connections are established.

        Raises:
            StorageUnavailableError: ``wait`` and PostgreSQL could not be reached in time.
        """

        def open_pool() -> None:
            with mapped_errors():
                self._pool.open(wait=wait, timeout=self._connect_timeout_seconds)

        await trio.to_thread.run_sync(open_pool)

    async def aclose(self) -> None:
        """Close every connection. In-flight transactions finish first."""
        await trio.to_thread.run_sync(self._pool.close)

    async def transact(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction in a worker thread and return its result.

        ``work`` runs in a thread: it must only use the `Transaction` (no trio calls).
        It commits when ``work`` returns and rolls back when it raises.

        Raises:
            StorageUnavailableError: no connection (server down, pool exhausted too long).
            StorageConflictError: serialization failure or deadlock; retry the transaction.
            UniqueViolationError: a unique constraint rejected a row.
            StorageTimeoutError: a statement exceeded ``statement_timeout``.
            StorageError: any other database error.

        Cancellation: the running statement is cancelled on the server and the call
            waits until the transaction has rolled back (or, if it was already
            committing, committed) before raising `trio.Cancelled`.
        """
        return await self._run(work, single_statement=False)

    async def _on_connection(self, body: Callable[[psycopg.Connection[Row]], T]) -> T:
        """Run ``body`` in a worker thread on a pooled connection, errors mapped; on
        cancel, cancel its statement on the server and wait for the thread."""
        holder: list[psycopg.Connection[Row]] = []

        def run() -> T:
            with mapped_errors(), self._pool.connection() as connection:
                holder.append(connection)
                return body(connection)

        async def cancel_running(finished: Callable[[], bool]) -> None:
            while not finished():
                if holder:
                    await trio.to_thread.run_sync(
                        holder[0].cancel_safe, limiter=self._cancel_limiter
                    )
                await trio.sleep(_CANCEL_RETRY_SECONDS)

        return await run_sync_interruptible(
            run, limiter=self._limiter, interrupt=cancel_running, interrupt_grace_seconds=5.0
        )

    async def _run(self, work: Callable[[Transaction], T], *, single_statement: bool) -> T:
        def run(connection: psycopg.Connection[Row]) -> T:
            if single_statement:
                # One statement is atomic on its own: autocommit saves BEGIN and COMMIT.
                connection.autocommit = True
                try:
                    return work(Transaction(connection))
                finally:
                    # A broken connection may refuse this; the pool discards it anyway,
                    # and transaction() below works in either mode.
                    with contextlib.suppress(psycopg.Error):
                        connection.autocommit = False
            with connection.transaction():
                return work(Transaction(connection))

        return await self._on_connection(run)

    async def transact_batch(
        self, works: Sequence[Callable[[Transaction], object]]
    ) -> tuple[list[outcome.Outcome[object]], bool]:
        """Run ``works`` in one transaction (one thread hop, one COMMIT) and return each
        one's outcome, in order, and whether the batch fell back to one by one.

        If any work raises, that transaction is rolled back and each work runs again in
        a transaction of its own (same thread hop), so each outcome is the one it would
        have had alone. If the COMMIT itself fails, every work gets that error.

        Raises:
            StorageUnavailableError: no connection could be had (nothing ran).

        Cancellation: as `transact`.
        """

        def alone(
            connection: psycopg.Connection[Row], work: Callable[[Transaction], object]
        ) -> outcome.Outcome[object]:
            def attempt() -> object:
                with mapped_errors(), connection.transaction():
                    return work(Transaction(connection))

            return outcome.capture(attempt)

        def run(connection: psycopg.Connection[Row]) -> tuple[list[outcome.Outcome[object]], bool]:
            if len(works) == 1:
                return [alone(connection, works[0])], False
            committing = False
            try:
                with connection.transaction():
                    results = [work(Transaction(connection)) for work in works]
                    committing = True
            except Exception:
                if committing:
                    raise  # mapped above
                return [alone(connection, work) for work in works], True
            return [outcome.Value(result) for result in results], False

        return await self._on_connection(run)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement on its own (atomic by itself); return the affected row count.

        Raises and cancels like `transact`.
        """
        return await self._run(lambda tx: tx.execute(sql, params), single_statement=True)

    async def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run one query on its own and return every row."""
        return await self._run(lambda tx: tx.fetch_all(sql, params), single_statement=True)

    async def fetch_one(self, sql: str, params: Params | None = None) -> Row | None:
        """Run one query on its own and return its first row, or None."""
        return await self._run(lambda tx: tx.fetch_one(sql, params), single_statement=True)

    def statistics(self) -> PoolStatistics:
        """Return the pool's current counters."""
        stats = self._pool.get_stats()
        return PoolStatistics(
            size=stats.get("pool_size", 0),
            available=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            max_size=self._pool.max_size,
        )


@contextlib.asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    statement_timeout_seconds: float = 30.0,
    connect_timeout_seconds: float = 5.0,
) -> AsyncIterator[PostgresStore]:
    """Open a `PostgresStore` for the block (waits for its first connections).

    See `PostgresStore` for the arguments.

    Raises:
        StorageUnavailableError: PostgreSQL could not be reached.
    """
    store = PostgresStore(
        url,
        min_size=min_size,
        max_size=max_size,
        statement_timeout_seconds=statement_timeout_seconds,
        connect_timeout_seconds=connect_timeout_seconds,
    )
    await store.open()
    try:
        yield store
    finally:
        with trio.move_on_after(10, shield=True):
            await store.aclose()
