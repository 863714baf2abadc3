"""What a worker's Redis user may reach, by property: its namespace's run streams, and no
other namespace's, whatever the workflow, version, pool and shard."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from aiki.protocol import NAMESPACE_PATTERN, stream_for
from aiki.protocol._streams import SLOTS, hash_slot
from aiki.server._redis_grants import USER_PREFIX, key_pattern, user_for, without_credentials

namespaces = st.from_regex(NAMESPACE_PATTERN, fullmatch=True)
names = st.text(min_size=1, max_size=40)
pools = st.none() | names
shards = st.integers(1, 8).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n)))


@given(own=namespaces, other=namespaces, workflow=names, version=names, pool=pools,
       shard=shards)  # fmt: skip
def test_a_namespaces_pattern_matches_its_streams_and_no_others(
    own: str, other: str, workflow: str, version: str, pool: str | None,
    shard: tuple[int, int],
) -> None:  # fmt: skip
    pattern = key_pattern(own)
    for namespace in (own, other):
        stream = stream_for(namespace, workflow, version, pool, shard=shard[0], shards=shard[1])
        # (Redis's glob and fnmatch's agree here: the pattern's one special character is *)
        assert fnmatch.fnmatchcase(stream, pattern) == (namespace == own)


@given(namespace=namespaces, worker=names, other=names)
def test_each_worker_has_a_user_of_its_own(namespace: str, worker: str, other: str) -> None:
    assert user_for(namespace, worker).startswith(USER_PREFIX)
    assert user_for(namespace, worker) == user_for(namespace, worker)
    if worker != other:
        assert user_for(namespace, worker) != user_for(namespace, other)


def test_workers_are_told_where_redis_is_without_the_servers_credentials() -> None:
    assert without_credentials("redis://admin:secret@10.0.0.5:6379/2") == "redis://10.0.0.5:6379/2"
    assert (without_credentials("rediss+cluster://u:p@a:7000,b:7001?x=1")
            == "rediss+cluster://a:7000,b:7001?x=1")  # fmt: skip
    assert without_credentials("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


@given(queue_text=st.text(alphabet="ab{}%", min_size=1, max_size=12), shards=st.integers(2, 8))
def test_names_with_braces_get_sub_streams_on_their_own_slots(queue_text: str, shards: int) -> None:
    """A ``}`` in a workflow's name used to end the hash tag early: the sub-stream search
    never found a tag in range and spun forever (found by the property above)."""
    keys = [stream_for("ns", queue_text, "1", None, shard=k, shards=shards) for k in range(shards)]
    width = SLOTS / shards
    for shard, key in enumerate(keys):
        assert abs(hash_slot(key) - (shard + 0.5) * width) <= width / 8
    assert len(set(keys)) == shards
    other = stream_for("ns", queue_text + "%", "1", None)
    assert other != stream_for("ns", queue_text, "1", None)  # the encoding stays one-to-one
