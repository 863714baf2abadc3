"""Redis Streams adapter against a real Redis: publish, group reads, acks, pending entries,
XAUTOCLAIM, and cancellation of a blocked read that loses no entry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
import trio

from tests._deadline import deadline
from tests._waiting import wait_until
from transport import StreamError
from transport.redis_streams import MAX_BLOCK_MS, RedisStreams, StreamReader, open_redis_streams

GROUP = "workers"


@pytest.fixture
async def streams(redis_url: str, stream_key: str) -> AsyncIterator[RedisStreams]:
    async with open_redis_streams(redis_url) as client:
        await client.ensure_group(stream_key, GROUP)
        yield client
        await client.delete(stream_key)


def _blocked_in_xreadgroup(redis_url: str, reader: StreamReader) -> bool:
    """True when Redis shows the reader's connection blocked in XREADGROUP."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.client_list(client_id=[reader._client_id])
    finally:
        client.close()
    return bool(entries) and entries[0]["cmd"] == "xreadgroup" and "b" in entries[0]["flags"]


def _blocked(redis_url: str, reader: StreamReader) -> Callable[[], Awaitable[bool]]:
    return lambda: trio.to_thread.run_sync(_blocked_in_xreadgroup, redis_url, reader)


async def _read_blocking(reader: StreamReader, stream_key: str, into: list[str]) -> None:
    entries = await reader.read([stream_key], count=1, block_ms=MAX_BLOCK_MS)
    into.extend(entry.entry_id for entry in entries)


@deadline(10)
async def test_published_entries_are_read_in_order_and_acked(
    streams: RedisStreams, stream_key: str
) -> None:
    """publish_many pipelines a batch; a group read returns it in order; ack empties the PEL."""
    ids = await streams.publish_many([(stream_key, f"m{i}".encode()) for i in range(5)])
    ids.append(await streams.publish(stream_key, b"m5"))
    assert len(set(ids)) == 6
    assert await streams.length(stream_key) == 6
    async with streams.open_reader(GROUP, "c1") as reader:
        entries = await reader.read([stream_key], count=10)
    assert [entry.payload for entry in entries] == [f"m{i}".encode() for i in range(6)]
    assert [entry.entry_id for entry in entries] == ids
    assert (await streams.pending_summary(stream_key, GROUP)).consumers == {"c1": 6}
    assert await streams.ack(stream_key, GROUP, ids) == 6
    assert (await streams.pending_summary(stream_key, GROUP)).count == 0


@deadline(10)
async def test_ensure_group_is_idempotent(streams: RedisStreams, stream_key: str) -> None:
    """Creating an existing group reports False instead of failing."""
    assert await streams.ensure_group(stream_key, GROUP) is False
    assert await streams.ensure_group(stream_key, "other") is True


@deadline(10)
async def test_reading_a_missing_group_is_a_stream_error(
    streams: RedisStreams, stream_key: str
) -> None:
    """NOGROUP from Redis surfaces as our StreamError, not a redis-py exception."""
    async with streams.open_reader("no-such-group", "c1") as reader:
        with pytest.raises(StreamError, match="NOGROUP"):
            await reader.read([stream_key], count=1)


@deadline(10)
async def test_read_arguments_are_validated(streams: RedisStreams, stream_key: str) -> None:
    """Out-of-range BLOCK or COUNT is refused before anything reaches Redis."""
    async with streams.open_reader(GROUP, "c1") as reader:
        with pytest.raises(ValueError, match="block_ms"):
            await reader.read([stream_key], count=1, block_ms=MAX_BLOCK_MS + 1)
        with pytest.raises(ValueError, match="count"):
            await reader.read([stream_key], count=0)


@deadline(10)
async def test_an_unacked_entry_is_claimed_by_another_consumer(
    streams: RedisStreams, stream_key: str
) -> None:
    """An entry read but never acked (its consumer died) is taken over with XAUTOCLAIM."""
    entry_id = await streams.publish(stream_key, b"job")
    async with streams.open_reader(GROUP, "c1") as reader:
        [first] = await reader.read([stream_key], count=1)
    # c1 "crashes" here: no ack.
    [pending] = await streams.pending(stream_key, GROUP)
    assert (pending.entry_id, pending.consumer, pending.deliveries) == (entry_id, "c1", 1)
    claimed = await streams.autoclaim(stream_key, GROUP, "c2", min_idle_ms=0)
    assert [entry.entry_id for entry in claimed.entries] == [first.entry_id]
    assert claimed.entries[0].payload == b"job"
    assert claimed.next_start == "0-0"
    [pending] = await streams.pending(stream_key, GROUP)
    assert (pending.consumer, pending.deliveries) == ("c2", 2)


@deadline(10)
async def test_entries_not_idle_long_enough_are_not_claimed(
    streams: RedisStreams, stream_key: str
) -> None:
    """XAUTOCLAIM leaves entries whose consumer is still within min_idle_ms."""
    await streams.publish(stream_key, b"job")
    async with streams.open_reader(GROUP, "c1") as reader:
        await reader.read([stream_key], count=1)
    claimed = await streams.autoclaim(stream_key, GROUP, "c2", min_idle_ms=60_000)
    assert claimed.entries == ()


@deadline(10)
async def test_a_restarted_consumer_rereads_its_own_pending_entries(
    streams: RedisStreams, stream_key: str
) -> None:
    """Entries delivered to a consumer name but never acked come back with id 0."""
    await streams.publish_many([(stream_key, b"a"), (stream_key, b"b")])
    async with streams.open_reader(GROUP, "c1") as reader:
        await reader.read([stream_key], count=2)
    async with streams.open_reader(GROUP, "c1") as restarted:
        again = await restarted.read_own_pending([stream_key], count=10)
        assert [entry.payload for entry in again] == [b"a", b"b"]
        assert await restarted.read([stream_key], count=10) == []  # nothing new


@deadline(10)
async def test_a_blocked_read_returns_as_soon_as_an_entry_arrives(
    streams: RedisStreams, stream_key: str, redis_url: str
) -> None:
    """BLOCK waits for the next entry instead of polling."""
    async with streams.open_reader(GROUP, "c1") as reader:
        got: list[bytes] = []

        async def consume() -> None:
            entries = await reader.read([stream_key], count=1, block_ms=MAX_BLOCK_MS)
            got.extend(entry.payload for entry in entries)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await wait_until(
                lambda: trio.to_thread.run_sync(_blocked_in_xreadgroup, redis_url, reader)
            )
            await streams.publish(stream_key, b"wake")
    assert got == [b"wake"]


@deadline(8)
async def test_cancelling_a_blocked_read_unblocks_it_and_steals_no_later_entry(
    streams: RedisStreams, stream_key: str, redis_url: str
) -> None:
    """A cancelled BLOCK read is unblocked on the server at once (the 8 s test cap is below
    the 10 s BLOCK), and an entry published afterwards goes to the next read, not to a
    dead one."""
    cancelled_got: list[str] = []
    async with streams.open_reader(GROUP, "c1") as reader:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_blocking, reader, stream_key, cancelled_got)
                await wait_until(_blocked(redis_url, reader))
                scope.cancel()
        assert cancelled_got == []
        assert not await trio.to_thread.run_sync(_blocked_in_xreadgroup, redis_url, reader)
        entry_id = await streams.publish(stream_key, b"after-cancel")
        assert (await streams.pending_summary(stream_key, GROUP)).count == 0, "nothing stolen"
        [entry] = await reader.read([stream_key], count=1, block_ms=1000)
        assert entry.entry_id == entry_id


@deadline(30)
async def test_an_entry_racing_a_cancel_is_delivered_exactly_once(
    streams: RedisStreams, stream_key: str, redis_url: str
) -> None:
    """The race: an entry reaches the blocked read just as it is cancelled. Either the
    cancelled call returned it, or the next read does; it never vanishes into the pending
    list. Repeated to hit both sides of the race."""
    outcomes = {"returned before cancel": 0, "kept for next read": 0}
    async with streams.open_reader(GROUP, "c1") as reader:
        for round_ in range(30):
            cancelled_got: list[str] = []
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_read_blocking, reader, stream_key, cancelled_got)
                    await wait_until(_blocked(redis_url, reader))
                    entry_id = await streams.publish(stream_key, f"r{round_}".encode())
                    scope.cancel()
            if cancelled_got:
                assert cancelled_got == [entry_id]
                outcomes["returned before cancel"] += 1
            else:
                [entry] = await reader.read([stream_key], count=1)
                assert entry.entry_id == entry_id
                outcomes["kept for next read"] += 1
            assert await reader.read([stream_key], count=1) == []  # delivered once only
            await streams.ack(stream_key, GROUP, [entry_id])
        assert (await streams.pending_summary(stream_key, GROUP)).count == 0
    assert outcomes["kept for next read"] > 0, outcomes


@deadline(10)
async def test_ack_with_delete_removes_entries_from_the_stream(
    streams: RedisStreams, stream_key: str
) -> None:
    """ack(delete=True) acknowledges and deletes in one round trip: the stream shrinks."""
    await streams.publish_many([(stream_key, b"a"), (stream_key, b"b")])
    async with streams.open_reader(GROUP, "c1") as reader:
        entries = await reader.read([stream_key], count=2)
    assert await streams.ack(stream_key, GROUP, [entries[0].entry_id], delete=True) == 1
    assert await streams.length(stream_key) == 1
    assert (await streams.pending_summary(stream_key, GROUP)).count == 1
