"""Names shared by the server (which publishes) and workers (which consume).

A queue (one workflow version, in one pool, in one namespace) is carried by one Redis
stream, or by ``shards`` sub-streams so that a hot queue spreads over a Redis Cluster's
nodes. Each stream key carries a hash tag (``{...}``), so everything about one stream
(the stream and its consumer group) lives in one cluster slot; the queues' tags differ,
so queues spread over the nodes. Sub-stream ``k`` of ``n`` has a tag chosen to hash
near the middle of the ``k``-th ``1/n`` of the slot space, so the sub-streams of a queue
land on different masters of an evenly assigned cluster. A run always goes to the same
sub-stream (`shard_of` its ID): its entries stay in order relative to each other.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import zlib
from typing import Final

import attrs

from ..wire import WireCodec

SLOTS: Final = 16384
"""Hash slots of a Redis Cluster."""

GROUP: Final = "aiki-workers"
"""The consumer group every worker reads run streams through."""

MAX_SHARDS: Final = 64
"""Sub-streams per queue, at most."""


def queue_for(namespace: str, workflow: str, version: str, pool: str | None) -> str:
    """The name of a queue: ``<namespace>/<workflow>@<version>[#<pool>]`` (a namespace
    name has no ``/``, so the name is one queue's only)."""
    base = f"{namespace}/{workflow}@{version}"
    return base if pool is None else f"{base}#{pool}"


def stream_for(
    namespace: str,
    workflow: str,
    version: str,
    pool: str | None,
    *,
    shard: int = 0,
    shards: int = 1,
) -> str:
    """The Redis stream that carries a queue's runs (its sub-stream ``shard`` of
    ``shards``): ``aiki:runs:{<queue>}``, or ``aiki:runs:{<queue>~<shard>[.<n>]}`` (with
    ``%``, ``{`` and ``}`` of the queue's name percent-encoded)."""
    queue = _in_tag(queue_for(namespace, workflow, version, pool))
    if shards == 1:
        return f"aiki:runs:{{{queue}}}"
    return f"aiki:runs:{{{_shard_tag(queue, shard, shards)}}}"


def _in_tag(queue: str) -> str:
    """``queue`` as it may stand in a hash tag: ``%``, ``{`` and ``}`` percent-encoded (a
    ``}`` would end the tag early, so the sub-stream suffix after it would not move the
    slot; names without them are unchanged)."""
    if not any(character in queue for character in "%{}"):
        return queue
    return queue.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def streams_for(
    namespace: str, workflow: str, version: str, pool: str | None, *, shards: int = 1
) -> tuple[str, ...]:
    """Every stream of a queue split into ``shards`` sub-streams."""
    return tuple(
        stream_for(namespace, workflow, version, pool, shard=shard, shards=shards)
        for shard in range(shards)
    )


def shard_of(run_id: str, shards: int) -> int:
    """The sub-stream a run's entries go to (the same one every time)."""
    return zlib.crc32(run_id.encode()) % shards


@functools.lru_cache(maxsize=4096)
def hash_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key``: CRC16 (XMODEM) of its hash tag (the text
    between the first ``{`` and the next ``}``, if not empty), or of the whole key,
    modulo `SLOTS` (the cluster specification's key-slot rule)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % SLOTS


def _shard_tag(queue: str, shard: int, shards: int) -> str:
    """The hash tag of sub-stream ``shard``: the first of ``<queue>~<shard>``,
    ``<queue>~<shard>.1``, ... whose slot lies within an eighth of a shard's width of
    the middle of the ``shard``-th ``1/shards`` of the slots (about ``4 * shards``
    candidates are tried)."""
    if not 0 <= shard < shards <= MAX_SHARDS:
        raise ValueError(f"shard {shard} of {shards} (at most {MAX_SHARDS} shards)")
    width = SLOTS / shards
    middle = (shard + 0.5) * width
    for attempt in itertools.count():
        tag = f"{queue}~{shard}" if attempt == 0 else f"{queue}~{shard}.{attempt}"
        if abs(hash_slot(f"{{{tag}}}") - middle) <= width / 8:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


@attrs.frozen(kw_only=True)
class QueuedRun:
    """A stream entry: this run is queued at this revision; claim it through the server."""

    run_id: str
    revision: int


QUEUED_RUN: Final = WireCodec[QueuedRun](QueuedRun)
