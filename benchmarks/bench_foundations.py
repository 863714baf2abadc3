"""Costs of the foundations: the actor runtime and the transport edges, with baselines.

Each transport figure is paired with a same-session baseline that calls the client
library directly on the trio thread (blocking the event loop, which a real service must
not do): the ratio is what the thread hop and our adapter cost. Cases run interleaved,
``--runs`` rounds, and the table quotes medians.

    python -m benchmarks foundations [--runs 5] [--json benchmarks/results/foundations.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
import trio

from actors import Mailbox, answer, ask
from transport.local_services import services_from_env
from transport.postgres import PostgresStore
from transport.redis_streams import RedisStreams

from ._report import Measurement, machine, table, write_json

MAILBOX_MESSAGES = 50_000
ASKS = 5_000
REDIS_OPS = 1_000
BATCH = 500
BATCHES = 10
PG_TXNS = 400
PG_TASKS = 8


async def _mailbox_throughput() -> float:
    box = Mailbox[int]("bench", capacity=64)

    async def consume() -> None:
        async for _ in box.inbox:
            pass

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for value in range(MAILBOX_MESSAGES):
            await box.address.send(value)
        box.close()
    return MAILBOX_MESSAGES / (time.perf_counter() - started)


async def _ask_latency_us() -> float:
    box = Mailbox[trio.MemorySendChannel[int]]("echo")

    async def serve() -> None:
        async for reply_to in box.inbox:
            answer(reply_to, 1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        started = time.perf_counter()
        for _ in range(ASKS):
            await ask(box.address, lambda reply_to: reply_to)
        elapsed = time.perf_counter() - started
        box.close()
    return elapsed / ASKS * 1e6


class _Bench:
    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.raw_redis = redis.Redis.from_url(redis_url)
        self.raw_pg = psycopg.connect(database_url, autocommit=False)
        self.raw_pg.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial, v int)")
        self.raw_pg.commit()

    async def xadd_raw(self) -> float:
        stream = f"bench:{uuid.uuid4().hex}"
        started = time.perf_counter()
        for _ in range(REDIS_OPS):
            self.raw_redis.xadd(stream, {b"m": b"x" * 64})
        rate = REDIS_OPS / (time.perf_counter() - started)
        self.raw_redis.delete(stream)
        return rate

    async def xadd_adapter(self, streams: RedisStreams) -> float:
        stream = f"bench:{uuid.uuid4().hex}"
        started = time.perf_counter()
        for _ in range(REDIS_OPS):
            await streams.publish(stream, b"x" * 64)
        rate = REDIS_OPS / (time.perf_counter() - started)
        await streams.delete(stream)
        return rate

    async def xadd_pipelined(self, streams: RedisStreams) -> float:
        stream = f"bench:{uuid.uuid4().hex}"
        batch = [(stream, b"x" * 64)] * BATCH
        started = time.perf_counter()
        for _ in range(BATCHES):
            await streams.publish_many(batch)
        rate = BATCH * BATCHES / (time.perf_counter() - started)
        await streams.delete(stream)
        return rate

    async def consume_and_ack(self, streams: RedisStreams) -> float:
        stream = f"bench:{uuid.uuid4().hex}"
        await streams.ensure_group(stream, "g")
        for _ in range(BATCHES):
            await streams.publish_many([(stream, b"x" * 64)] * BATCH)
        started = time.perf_counter()
        total = 0
        async with streams.open_reader("g", "c") as reader:
            while total < BATCH * BATCHES:
                entries = await reader.read([stream], count=100)
                await streams.ack(stream, "g", [entry.entry_id for entry in entries])
                total += len(entries)
        rate = total / (time.perf_counter() - started)
        await streams.delete(stream)
        return rate

    async def cancel_blocked_read_ms(self, streams: RedisStreams) -> float:
        stream = f"bench:{uuid.uuid4().hex}"
        await streams.ensure_group(stream, "g")
        async with streams.open_reader("g", "c") as reader:
            with trio.move_on_after(0.05) as scope:
                await reader.read([stream], count=1, block_ms=10_000)
            # The deadline fired at 50 ms; the rest is unblocking and joining the thread.
            elapsed_ms = (trio.current_time() - scope.deadline) * 1000
        await streams.delete(stream)
        return elapsed_ms

    async def pg_raw(self) -> float:
        started = time.perf_counter()
        for i in range(PG_TXNS):
            self.raw_pg.execute("INSERT INTO bench_rows (v) VALUES (%s)", (i,))
            self.raw_pg.commit()
        return PG_TXNS / (time.perf_counter() - started)

    async def pg_store(self, store: PostgresStore, tasks: int) -> float:
        per_task = PG_TXNS // tasks if tasks > 1 else PG_TXNS

        async def worker() -> None:
            for i in range(per_task):
                await store.execute("INSERT INTO bench_rows (v) VALUES (%s)", (i,))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
        return per_task * tasks / (time.perf_counter() - started)


async def _run(database_url: str, redis_url: str, runs: int) -> list[Measurement]:
    bench = _Bench(database_url, redis_url)
    streams = RedisStreams(redis_url, max_threads=8)
    store = PostgresStore(database_url, min_size=PG_TASKS, max_size=PG_TASKS)
    await store.open()
    m = {
        "mailbox": Measurement("actors", "mailbox send+receive", "msgs/s"),
        "ask": Measurement("actors", "ask round trip", "µs"),
        "xadd_raw": Measurement("redis", "XADD, redis-py on the trio thread (baseline)", "ops/s"),
        "xadd": Measurement("redis", "XADD via RedisStreams.publish (thread hop)", "ops/s"),
        "xadd_pipe": Measurement("redis", f"XADD via publish_many ({BATCH}/batch)", "entries/s"),
        "consume": Measurement("redis", "XREADGROUP COUNT 100 + XACK via adapter", "entries/s"),
        "unblock": Measurement("redis", "cancel of a blocked read: deadline → return", "ms"),
        "pg_raw": Measurement(
            "postgres", "INSERT+COMMIT, psycopg on the trio thread (baseline)", "txn/s"
        ),
        "pg_1": Measurement("postgres", "INSERT+COMMIT via PostgresStore, 1 task", "txn/s"),
        "pg_8": Measurement(
            "postgres", f"INSERT+COMMIT via PostgresStore, {PG_TASKS} tasks", "txn/s"
        ),
    }
    cases = [
        ("mailbox", _mailbox_throughput),
        ("ask", _ask_latency_us),
        ("xadd_raw", bench.xadd_raw),
        ("xadd", lambda: bench.xadd_adapter(streams)),
        ("xadd_pipe", lambda: bench.xadd_pipelined(streams)),
        ("consume", lambda: bench.consume_and_ack(streams)),
        ("unblock", lambda: bench.cancel_blocked_read_ms(streams)),
        ("pg_raw", bench.pg_raw),
        ("pg_1", lambda: bench.pg_store(store, 1)),
        ("pg_8", lambda: bench.pg_store(store, PG_TASKS)),
    ]
    for round_ in range(runs):
        for key, case in cases:
            m[key].samples.append(await case())
        print(f"  round {round_ + 1}/{runs} done", file=sys.stderr, flush=True)
    await store.aclose()
    await streams.aclose()
    return list(m.values())


def main(argv: list[str]) -> None:
    """Run the foundations benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks foundations")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/foundations.json"))
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="aiki-bench-"))
    services = services_from_env(base, fsync=True)
    try:
        measurements = trio.run(_run, services.database_url, services.redis_url, args.runs)
    finally:
        for service in (services.redis, services.postgres):
            if service is not None:
                service.remove()
        shutil.rmtree(base, ignore_errors=True)
    ratios = {
        "XADD adapter / raw": (
            "XADD via RedisStreams.publish (thread hop)",
            "XADD, redis-py on the trio thread (baseline)",
        ),
        "pipelined / raw XADD": (
            f"XADD via publish_many ({BATCH}/batch)",
            "XADD, redis-py on the trio thread (baseline)",
        ),
        "PG store 1 task / raw": (
            "INSERT+COMMIT via PostgresStore, 1 task",
            "INSERT+COMMIT, psycopg on the trio thread (baseline)",
        ),
        f"PG store {PG_TASKS} tasks / raw": (
            f"INSERT+COMMIT via PostgresStore, {PG_TASKS} tasks",
            "INSERT+COMMIT, psycopg on the trio thread (baseline)",
        ),
    }
    print(f"\nMachine: {machine()}; local PostgreSQL (fsync on) and Redis on loopback\n")
    print(table(measurements, ratios))
    write_json(args.json, measurements)
    print(f"\nsamples: {args.json}")
