"""``aiki demo``: the foundations at work, end to end, against real PostgreSQL and Redis.

A supervision tree of actors moves jobs from a Redis stream into PostgreSQL:

- ``subscriber`` reads the stream through a consumer group (``XREADGROUP``) and hands
  each entry to the recorders, waiting when they are all busy (bounded mailboxes);
- ``recorders``, a balancing pool of actors, record each job in PostgreSQL in one
  transaction and only then acknowledge the entry;
- ``sweeper`` takes over entries left unacknowledged for too long (``XAUTOCLAIM``);
- ``progress`` counts what has been recorded.

One job is flaky: it crashes its recorder after recording, before the ack. The supervisor
restarts the recorder, the sweeper reclaims the entry, and it is recorded again, which
the idempotent upsert turns into a second attempt rather than a duplicate row. `aiki dev`
(a real server and worker) replaces this demo once the durable core exists.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, assert_never

import attrs
import trio

from actors import (
    Address,
    Backoff,
    ChildSpec,
    RestartIntensity,
    answer,
    ask,
    messages_or_ticks,
    open_supervisor,
    pool,
)
from transport import (
    Migration,
    PostgresStore,
    RedisStreams,
    StreamEntry,
    StreamReader,
    Transaction,
    WireCodec,
    apply_migrations,
    open_postgres_store,
    open_redis_streams,
)

logger = logging.getLogger(__name__)

STREAM: Final = "aiki:demo:jobs"
GROUP: Final = "aiki-demo"
CONSUMER: Final = "demo-worker"
CLAIM_IDLE_MS: Final = 500
"""An entry unacknowledged this long belongs to a crashed recorder: take it over."""

MIGRATIONS: Final = [
    Migration(
        1,
        "demo_jobs",
        "CREATE TABLE aiki_demo_jobs ("
        " number integer PRIMARY KEY, attempts integer NOT NULL,"
        " recorded_at timestamptz NOT NULL DEFAULT now());",
    )
]


@attrs.frozen(kw_only=True)
class Job:
    """What travels through the stream."""

    number: int
    flaky: bool = False


JOBS: Final = WireCodec[Job](Job)


class FlakyJobError(Exception):
    """Raised by the flaky job on its first attempt, to crash its recorder."""


# -- messages ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RecordJob:
    """Record one stream entry in PostgreSQL, then acknowledge it."""

    entry: StreamEntry


@attrs.frozen(kw_only=True)
class JobRecorded:
    """A job was recorded and acknowledged."""

    number: int
    attempt: int


@attrs.frozen(kw_only=True)
class WaitForJobs:
    """Reply once ``count`` distinct jobs have been recorded."""

    count: int
    reply_to: trio.MemorySendChannel[DemoReport] = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class DemoReport:
    """What the progress actor saw."""

    recorded: int
    redelivered: int


ProgressMsg = JobRecorded | WaitForJobs


# -- actors ------------------------------------------------------------------------------------


@attrs.define
class Progress:
    """Counts recorded jobs and answers waiters when enough have been seen."""

    total: int
    _numbers: set[int] = attrs.field(factory=set, init=False)
    _redelivered: int = attrs.field(default=0, init=False)
    _waiters: list[WaitForJobs] = attrs.field(factory=list, init=False)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ProgressMsg],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve progress messages until the mailbox closes."""
        task_status.started()
        async for message in inbox:
            match message:
                case JobRecorded(number=number, attempt=attempt):
                    self._numbers.add(number)
                    self._redelivered += attempt > 1
                    if len(self._numbers) % max(1, self.total // 10) == 0:
                        print(f"  recorded {len(self._numbers):>6} / {self.total}", flush=True)
                case WaitForJobs():
                    self._waiters.append(message)
                case _:
                    assert_never(message)
            for waiter in [w for w in self._waiters if len(self._numbers) >= w.count]:
                self._waiters.remove(waiter)
                report = DemoReport(recorded=len(self._numbers), redelivered=self._redelivered)
                answer(waiter.reply_to, report)


def _record(tx: Transaction, *, job: Job) -> int:
    row = tx.fetch_one(
        "INSERT INTO aiki_demo_jobs (number, attempts) VALUES (%s, 1)"
        " ON CONFLICT (number) DO UPDATE SET attempts = aiki_demo_jobs.attempts + 1"
        " RETURNING attempts",
        (job.number,),
    )
    assert row is not None
    return int(str(row[0]))


@attrs.define
class Recorder:
    """Records jobs in PostgreSQL and acknowledges them only afterwards (at-least-once)."""

    streams: RedisStreams
    store: PostgresStore
    progress: Address[ProgressMsg]

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[RecordJob],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Record each job handed over until the mailbox closes."""
        task_status.started()
        async for message in inbox:
            job = JOBS.decode(message.entry.payload)
            attempt = await self.store.transact(functools.partial(_record, job=job))
            if job.flaky and attempt == 1:
                raise FlakyJobError(f"job {job.number} crashes its recorder before the ack")
            await self.streams.ack(STREAM, GROUP, [message.entry.entry_id])
            await self.progress.send(JobRecorded(number=job.number, attempt=attempt))


@attrs.define
class Subscriber:
    """Reads the stream for the consumer group and feeds the recorders."""

    streams: RedisStreams
    recorders: Callable[[RecordJob], Awaitable[None]]

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read until the mailbox closes; a blocked read is cancelled without losing entries."""
        async with (
            self.streams.open_reader(GROUP, CONSUMER) as reader,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._consume, reader)
            task_status.started()
            async for _ in inbox:
                pass
            nursery.cancel_scope.cancel()

    async def _consume(self, reader: StreamReader) -> None:
        # Entries this consumer received before a restart come first.
        pending = await reader.read_own_pending([STREAM], count=100)
        while True:
            for entry in pending or await reader.read([STREAM], count=50, block_ms=1000):
                await self.recorders(RecordJob(entry=entry))
            pending = []


@attrs.define
class Sweeper:
    """Takes over entries left unacknowledged too long and hands them out again."""

    streams: RedisStreams
    recorders: Callable[[RecordJob], Awaitable[None]]
    interval_seconds: float = 0.25

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep every ``interval_seconds`` until the mailbox closes."""
        task_status.started()
        async for _ in messages_or_ticks(inbox, self.interval_seconds):
            claimed = await self.streams.autoclaim(
                STREAM, GROUP, CONSUMER, min_idle_ms=CLAIM_IDLE_MS
            )
            for entry in claimed.entries:
                logger.info("reclaimed %s after a crash", entry.entry_id)
                await self.recorders(RecordJob(entry=entry))


# -- the demo ----------------------------------------------------------------------------------


async def run_demo(database_url: str, redis_url: str, *, jobs: int, recorders: int) -> DemoReport:
    """Publish ``jobs`` jobs and let the supervision tree record them; return what happened."""
    async with (
        open_postgres_store(database_url, max_size=recorders + 2) as store,
        open_redis_streams(redis_url, max_threads=recorders + 4) as streams,
    ):
        await apply_migrations(store, MIGRATIONS, table="aiki_demo_migrations")
        await store.execute("TRUNCATE aiki_demo_jobs")
        await streams.delete(STREAM)
        await streams.ensure_group(STREAM, GROUP)

        progress = ChildSpec(name="progress", factory=lambda: Progress(jobs), capacity=64)
        workers = pool(
            "recorders",
            lambda: Recorder(streams, store, progress.address),
            size=recorders,
            intensity=RestartIntensity(max_restarts=5, within_seconds=10),
            backoff=Backoff(initial_seconds=0.05),
        )
        send = workers.router.send
        subscriber = ChildSpec(name="subscriber", factory=lambda: Subscriber(streams, send))
        sweeper = ChildSpec(name="sweeper", factory=lambda: Sweeper(streams, send))

        started = time.monotonic()
        async with open_supervisor("demo", [progress, workers.spec, subscriber, sweeper]) as root:
            payloads = [JOBS.encode(Job(number=n, flaky=n == 7)) for n in range(1, jobs + 1)]
            for start in range(0, jobs, 1000):
                batch = payloads[start : start + 1000]
                await streams.publish_many([(STREAM, payload) for payload in batch])
            with trio.fail_after(120):
                report: DemoReport = await ask(
                    progress.address, lambda reply_to: WaitForJobs(count=jobs, reply_to=reply_to)
                )
            elapsed = time.monotonic() - started
            stats = await root.statistics()
        rows = await store.fetch_one("SELECT count(*), sum(attempts) FROM aiki_demo_jobs")
        pending = (await streams.pending_summary(STREAM, GROUP)).count
    pool_stats = stats.child("recorders").supervisor
    restarts = sum(child.restarts for child in pool_stats.children) if pool_stats else 0
    stored, attempts = rows or (0, 0)
    print(
        f"\nAiki demo: {jobs} jobs, Redis Streams -> {recorders} supervised actors -> PostgreSQL\n"
        f"  rows in PostgreSQL  {stored} (attempts recorded: {attempts})\n"
        f"  redelivered         {report.redelivered} (the flaky job, reclaimed with XAUTOCLAIM)\n"
        f"  recorder restarts   {restarts} (one_for_one, by the pool's supervisor)\n"
        f"  pending in group    {pending}\n"
        f"  elapsed             {elapsed:.2f} s ({jobs / elapsed:,.0f} jobs/s)"
    )
    return report
