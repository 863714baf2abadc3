"""Eager dispatch: free slots that workers offer, taken by this server's starts.

A worker with free slots keeps `OfferSlot` requests open on its session, one slot each.
A start of a run the worker serves takes the oldest such offer before its transaction,
and that transaction creates the run already claimed by the worker (running at revision
2, history ``started`` then ``claimed at start``); after the commit the offer's request
is answered with the claim. The run takes no outbox row, no stream entry and no claim
request of its own: one transaction and one reply instead of a publish, a stream read, a
claim request and the claim's transaction.

When it does not work out:
- the start created no run (its reference ID exists) or failed: the offer is answered
  with nothing, and the worker offers again;
- the offer's request ended before its claim could be handed over (the worker's session
  closed): the run is given back at once (queued again and published; not a lost
  execution);
- the server dies between the commit and the answer: no heartbeat ever refreshes the
  claim, and the claim sweeper releases it after the claim timeout, as for any claim
  whose worker went silent.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Final

import attrs
import trio

from ...protocol import RunClaimed

Queue = tuple[str, str, str, str | None]
"""Runs of one queue: namespace, workflow, version, pool."""

ANSWER_SECONDS: Final = 30.0
"""How long a taken offer's request waits for its start's transaction to end."""


@attrs.define(eq=False)
class Offer:
    """One free slot of one worker, until a start takes it or its request ends."""

    worker_id: str
    queues: tuple[Queue, ...]
    taken: bool = False
    """A start took it: its transaction is under way."""
    ended: bool = False
    """Its request was answered or gave up: a claim handed over now would be lost."""
    claim: RunClaimed | None = None
    answered: trio.Event = attrs.Factory(trio.Event)

    def answer(self, claim: RunClaimed | None) -> bool:
        """Hand the offer's request its claim (None: no run after all); False if the
        request ended already (the caller gives the claimed run back)."""
        if self.ended:
            return False
        self.claim = claim
        self.answered.set()
        return True


@attrs.define
class Offers:
    """The offers open on this server, by queue, oldest first."""

    _waiting: dict[Queue, deque[Offer]] = attrs.Factory(dict)

    def take(self, queue: Queue) -> Offer | None:
        """The oldest open offer for ``queue`` (now taken: no other start gets it)."""
        offers = self._waiting.get(queue)
        if not offers:
            return None
        offer = offers[0]
        self._drop(offer)
        offer.taken = True
        return offer

    async def hold(self, offer: Offer, wait_seconds: float) -> RunClaimed | None:
        """Keep ``offer`` open for up to ``wait_seconds``; return the claim a start
        handed it, or None. A taken offer waits for its start's transaction to end (up to
        `ANSWER_SECONDS` more).

        Cancellation: the offer is withdrawn; a start that took it gives its run back.
        """
        for queue in offer.queues:
            self._waiting.setdefault(queue, deque()).append(offer)
        try:
            with trio.move_on_after(wait_seconds):
                await offer.answered.wait()
            if offer.taken and not offer.answered.is_set():
                with trio.move_on_after(ANSWER_SECONDS):
                    await offer.answered.wait()
        finally:
            offer.ended = True
            if not offer.taken:
                self._drop(offer)
        return offer.claim

    def by_queue(self) -> dict[Queue, int]:
        """Open offers per queue they name (an offer for several queues counts in each)."""
        return {queue: len(offers) for queue, offers in self._waiting.items()}

    def open(self) -> int:
        """Offers open now (an offer for several queues counts once)."""
        return len({id(offer) for offers in self._waiting.values() for offer in offers})

    def _drop(self, offer: Offer) -> None:
        for queue in offer.queues:
            offers = self._waiting.get(queue)
            if offers is not None:
                with contextlib.suppress(ValueError):
                    offers.remove(offer)
                if not offers:
                    del self._waiting[queue]
