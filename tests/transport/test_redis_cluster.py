"""Redis Streams on a real 3-master Redis Cluster (the project's launcher): URLs, reads
per slot on the slot owner's node, a cancelled read that loses nothing, XAUTOCLAIM per
stream, a queue's sub-streams spread over the masters with each run's entries in one
sub-stream in order, and a node that comes back empty."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio

from aiki.protocol import GROUP, QUEUED_RUN, shard_of, streams_for
from aiki.protocol._streams import hash_slot as stream_hash_slot
from aiki.server.delivery import stream_entries
from aiki.server.store.outbox import OutboxEntry
from tests._deadline import deadline
from transport import StreamError, StreamUnavailableError
from transport.local_cluster import LocalRedisCluster
from transport.redis_streams import (
    MAX_BLOCK_MS,
    RedisStreams,
    hash_slot,
    open_redis_streams,
    parse_redis_url,
)


@pytest.fixture
async def streams(redis_cluster: LocalRedisCluster) -> AsyncIterator[RedisStreams]:
    async with open_redis_streams(redis_cluster.url) as client:
        yield client


def _spread_keys(cluster: LocalRedisCluster) -> list[str]:
    """One fresh stream key on each master (found by trying tags)."""
    found: dict[int, str] = {}
    for attempt in range(10_000):
        key = f"t:{{{uuid.uuid4().hex[:8]}}}:{attempt}"
        owner = cluster.owner(hash_slot(key))
        found.setdefault(owner, key)
        if len(found) == cluster.masters:
            return list(found.values())
    raise AssertionError("no key found for every master")


def test_a_cluster_url_names_seeds_and_bad_urls_are_refused_by_name() -> None:
    target = parse_redis_url("redis+cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001?protocol=3")
    assert target.cluster
    assert target.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert target.node_url("10.0.0.3", 7002) == "redis://user:pw@10.0.0.3:7002?protocol=3"
    assert parse_redis_url("rediss+cluster://h:1").node_url("h", 1) == "rediss://h:1"
    plain = parse_redis_url("redis://127.0.0.1:6390/2")
    assert not plain.cluster
    assert plain.seeds == (("127.0.0.1", 6390),)
    for url, says in [
        ("http://h:1", "scheme must be"),
        ("redis+cluster://", "at least one cluster node"),
        ("redis+cluster://u:secret@h", "'h' must be host:port"),
        ("redis+cluster://h:1/2", "database 0 only"),
    ]:
        with pytest.raises(ValueError, match=says) as caught:
            parse_redis_url(url)
        assert "secret" not in str(caught.value)


@deadline(30)
async def test_streams_on_every_master_are_read_per_slot_and_acked(
    streams: RedisStreams, redis_cluster: LocalRedisCluster
) -> None:
    """A pipelined publish reaches every node; each slot's streams are read by their own
    reader; acks and XAUTOCLAIM work per stream."""
    keys = _spread_keys(redis_cluster)
    for key in keys:
        assert await streams.ensure_group(key, GROUP)
    batch = [(key, f"{key}/{n}".encode()) for n in range(3) for key in keys]
    ids = await streams.publish_many(batch)
    assert len({(key, entry_id) for (key, _), entry_id in zip(batch, ids, strict=True)}) == 9
    groups = streams.read_groups(keys)
    assert sorted(len(group) for group in groups) == [1, 1, 1]
    read: dict[str, list[bytes]] = {}
    for group in groups:
        async with streams.open_reader(GROUP, "c1", group) as reader:
            for entry in await reader.read(group, count=10, block_ms=100):
                read.setdefault(entry.stream, []).append(entry.payload)
    assert read == {key: [f"{key}/{n}".encode() for n in range(3)] for key in keys}
    claimed = await streams.autoclaim(keys[0], GROUP, "c2", min_idle_ms=0)
    assert [entry.payload for entry in claimed.entries] == read[keys[0]]
    pending = await streams.pending(keys[0], GROUP)
    assert await streams.ack(keys[0], GROUP, [entry.entry_id for entry in pending], delete=True)
    assert await streams.length(keys[0]) == 0
    with pytest.raises(ValueError, match="one slot"):
        async with streams.open_reader(GROUP, "c1", keys):
            pass
    assert await streams.delete(*keys) == 3


@deadline(30)
async def test_a_cancelled_read_on_a_node_loses_nothing(
    streams: RedisStreams, redis_cluster: LocalRedisCluster
) -> None:
    """The blocked read is unblocked on its own node, and what arrives next is read."""
    key = _spread_keys(redis_cluster)[-1]
    await streams.ensure_group(key, GROUP)
    async with streams.open_reader(GROUP, "c1", [key]) as reader:
        with trio.move_on_after(0.3) as waited:
            await reader.read([key], count=1, block_ms=MAX_BLOCK_MS)
        assert waited.cancelled_caught
        await streams.publish(key, b"after")
        entries = await reader.read([key], count=1, block_ms=MAX_BLOCK_MS)
    assert [entry.payload for entry in entries] == [b"after"]
    await streams.delete(key)


@deadline(30)
async def test_a_queue_in_four_sub_streams_spreads_over_the_masters_in_run_order(
    streams: RedisStreams, redis_cluster: LocalRedisCluster
) -> None:
    """Sub-streams hash to different slots on every master; each run's entries all go to
    one sub-stream, in the order published (revisions ascending)."""
    workflow = f"hot-{uuid.uuid4().hex[:6]}"
    keys = streams_for("default", workflow, "1", None, shards=4)
    owners = {redis_cluster.owner(hash_slot(key)) for key in keys}
    assert len({hash_slot(key) for key in keys}) == 4
    assert owners == {node.port for node in redis_cluster.nodes}
    for key in keys:
        await streams.ensure_group(key, GROUP)
    runs = [f"run-{n}" for n in range(60)]
    outbox = [OutboxEntry(outbox_id=0, run_id=run, revision=revision, workflow=workflow,
                          version="1", pool=None, namespace="default")
              for revision in (1, 3, 5) for run in runs]  # fmt: skip
    await streams.publish_many(stream_entries(outbox, shards=4))
    seen: dict[str, list[tuple[str, int]]] = {}
    for group in streams.read_groups(keys):
        async with streams.open_reader(GROUP, "c1", group) as reader:
            for entry in await reader.read(group, count=500, block_ms=100):
                queued = QUEUED_RUN.decode(entry.payload)
                seen.setdefault(queued.run_id, []).append((entry.stream, queued.revision))
    assert sorted(seen) == sorted(runs)
    for run, entries in seen.items():
        assert [stream for stream, _ in entries] == [keys[shard_of(run, 4)]] * 3
        assert [revision for _, revision in entries] == [1, 3, 5]
    per_stream = {key: await streams.length(key) for key in keys}
    assert all(length > 0 for length in per_stream.values()), per_stream
    assert await streams.delete(*keys) == 4


@deadline(60)
async def test_a_node_back_without_its_data_answers_again_and_groups_are_recreated(
    streams: RedisStreams, redis_cluster: LocalRedisCluster
) -> None:
    """While the node is down its slots fail as unavailable; back empty, its stream has
    no group (a StreamError the subscriber answers by recreating groups)."""
    index = 2
    key = next(k for k in _spread_keys(redis_cluster)
               if redis_cluster.owner(hash_slot(k)) == redis_cluster.nodes[index].port)  # fmt: skip
    await streams.ensure_group(key, GROUP)
    await streams.publish(key, b"lost")
    await trio.to_thread.run_sync(redis_cluster.nodes[index].kill)
    with pytest.raises(StreamUnavailableError):
        await streams.publish(key, b"nobody")
    await trio.to_thread.run_sync(redis_cluster.restart_node, index)
    async with streams.open_reader(GROUP, "c1", [key]) as reader:
        with pytest.raises(StreamError, match="NOGROUP"):
            await reader.read([key], count=1)
        assert await streams.ensure_group(key, GROUP)
        await streams.publish(key, b"again")
        entries = await reader.read([key], count=5, block_ms=1000)
    assert [entry.payload for entry in entries] == [b"again"]
    await streams.delete(key)


def test_the_protocols_slot_rule_is_redis_own(redis_cluster: LocalRedisCluster) -> None:
    """The stream names' slot maths (pure, in the protocol) gives the slot a real cluster
    node computes, hash tags included: empty, unclosed, nested and repeated braces."""
    import redis as redis_py  # the test asks the server itself

    keys = ["", "{", "}", "{}", "{}x", "a{}b{c}", "{a}{b}", "{{a}}", "x{a", "a}b{c}d",
            "aiki:runs:{default/orders@1.0.0#gpu}", "é{ü}", "{" + "x" * 300 + "}"]  # fmt: skip
    keys += [f"k{{{uuid.uuid4().hex[:n]}}}:{n}" for n in range(12)]
    keys += [uuid.uuid4().hex for _ in range(50)]
    node = redis_cluster.nodes[0]
    client = redis_py.Redis(host="127.0.0.1", port=node.port, decode_responses=True)
    try:
        for key in keys:
            assert stream_hash_slot(key) == client.execute_command("CLUSTER KEYSLOT", key), key
    finally:
        client.close()
