"""A reply through the worker's link reaches its asker; one that comes after the asker
stopped waiting goes to the call's ``orphaned`` handler (an offered slot's claim is given
back that way), and an error nobody waits for is dropped."""

from __future__ import annotations

import pytest
import trio

from aiki.errors import UnavailableError
from aiki.protocol import MAX_SHARDS, ClaimedRuns, OfferSlot, ServedQueue, WorkerRegistered
from aiki.wire import CodecError, WireCodec
from aiki.worker._link import Call

OFFER = OfferSlot(worker_id="w1", queues=(ServedQueue(workflow="wf", version="1"),),
                  wait_seconds=1.0)  # fmt: skip


def test_a_reply_reaches_the_asker_and_a_late_one_goes_to_orphaned() -> None:
    orphans: list[ClaimedRuns] = []
    waiting_send, waiting = trio.open_memory_channel[object](1)
    Call(request=OFFER, reply_to=waiting_send, orphaned=orphans.append).deliver(ClaimedRuns())
    assert (waiting.receive_nowait(), orphans) == (ClaimedRuns(), [])

    late = ClaimedRuns()
    gone_send, gone = trio.open_memory_channel[object](1)
    gone.close()  # the asker was cancelled
    Call(request=OFFER, reply_to=gone_send, orphaned=orphans.append).deliver(late)
    assert orphans == [late]

    errors_send, errors = trio.open_memory_channel[object](1)
    errors.close()
    Call(request=OFFER, reply_to=errors_send, orphaned=orphans.append).deliver(
        UnavailableError("session dropped")
    )
    assert orphans == [late]  # an error is nothing to hand back


def test_a_registration_reply_naming_too_many_sub_streams_is_refused_when_decoded() -> None:
    """The server's ``stream_shards`` is a peer's number: beyond `MAX_SHARDS` the reply is
    not a reply (the worker would otherwise build that many stream names)."""
    codec = WireCodec[WorkerRegistered](WorkerRegistered)
    assert codec.decode(b'{"worker_id":"w","stream_shards":64}').stream_shards == MAX_SHARDS
    for shards in (0, MAX_SHARDS + 1, 10**9):
        with pytest.raises(CodecError):
            codec.decode(b'{"worker_id":"w","stream_shards":%d}' % shards)
