"""What the worker's actors send each other about work.

- `ExecuteRun`: the subscriber hands a run to the pool of run actors;
- `SlotFreed`: a run actor is done with the run it was handed (to the subscriber);
- `TakeOver`: the claimer took entries over from a dead consumer (to the subscriber).
"""

from __future__ import annotations

import attrs

from transport.redis_streams import StreamEntry

from ..protocol import RunClaimed


@attrs.frozen(kw_only=True)
class ExecuteRun:
    """Execute the run a stream entry announces (claim it first), or one already claimed
    through the server (an offered slot taken by a start, or the pull path while Redis is
    down)."""

    entry: StreamEntry | None = None
    claim: RunClaimed | None = None
    claimed_after: float | None = None
    """For a claim: a time (trio clock) before the claim was made, from which its lease
    may be counted; None: unknown (the claim is confirmed before the first task)."""


@attrs.frozen
class SlotFreed:
    """A run actor finished the run it was handed: one more slot is free."""


@attrs.frozen(kw_only=True)
class TakeOver:
    """Entries the claimer took over from a dead consumer: hand them out as slots free."""

    entries: tuple[StreamEntry, ...]


SubscriberMsg = SlotFreed | TakeOver
"""The subscriber's mailbox."""
