"""Delivery: every way a queued run reaches a worker, owned here.

A run becomes ``queued`` (the lifecycle's only dispatchable status) in a transaction that
also writes its outbox row, or, for a start a worker's open offer takes, is created
already claimed. From there it reaches a worker by one of these paths (the table in
``docs/architecture.md``, "Delivery", gives what each costs and how each fails):

1. **Outbox** (`Dispatcher`): leased in batches, published to the run's Redis stream in
   one pipelined round trip, then deleted; a crash in between publishes again after the
   lease (the worker's claim refuses the duplicate).
2. **Fast lane** (`FastLane`): a start's transaction leases its own outbox row for
   `FAST_LEASE_SECONDS` and hands it to the dispatcher in memory, which publishes at
   once; if that does not happen, the lease ends and the outbox publishes it.
3. **Eager dispatch** (`Offers`): a worker's free slots wait as open `OfferSlot`
   requests; a start of a run the worker serves takes one and creates the run claimed
   for it (no outbox row, no stream entry, no claim request).
4. **Stream and claim**: the worker reads the stream entry and claims the run with
   ``claim_run`` (the lifecycle's ``claim``); the one path every published run takes.
5. **Pull** (``claim_next``): while Redis is unreachable, the worker asks the server for
   queued runs it serves and claims them in one transaction.
6. **The gate** (`Gate`): a run whose version names concurrency limits and that lacks
   its slots, or a start for a queue whose workers are saturated, waits in PostgreSQL
   instead; a pass of the gate lets it through when its queue has room and its limits
   admit it (by priority, then fair share, then age), with its outbox row, handed to
   the fast lane.
7. **Take-over and redelivery**: a worker's claimer takes over stream entries another
   consumer read and never acknowledged (``XAUTOCLAIM``); runs still queued long after
   they were published are published again through the outbox (Redis lost them).

The SQL of these paths is in `aiki.server.store` (``outbox``, ``recovery``, ``runs``); the
worker's side in `aiki.worker` (subscriber, claimer).
"""

from ._dispatcher import FAST_LEASE_SECONDS as FAST_LEASE_SECONDS
from ._dispatcher import Dispatcher as Dispatcher
from ._dispatcher import FastLane as FastLane
from ._dispatcher import Wake as Wake
from ._dispatcher import poke as poke
from ._dispatcher import stream_entries as stream_entries
from ._gate import Gate as Gate
from ._gate import Open as Open
from ._gate import Room as Room
from ._gate import open_gate as open_gate
from ._offers import Offer as Offer
from ._offers import Offers as Offers

__all__ = [
    "FAST_LEASE_SECONDS",
    "Dispatcher",
    "FastLane",
    "Gate",
    "Offer",
    "Offers",
    "Open",
    "Room",
    "Wake",
    "open_gate",
    "poke",
    "stream_entries",
]
