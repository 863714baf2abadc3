"""Riding out PostgreSQL and Redis outages inside an actor, instead of crashing.

A store or stream that is down is an expected condition, not a bug: crashing would burn
the supervisor's restart budget in seconds and take the server down with the outage.
Actors wrap each round of work in `Outage.guard`; a retryable transport error logs once,
waits a capped, jittered exponential backoff (`actors.Backoff`), and the round is tried
again. Anything else crashes the actor as usual, for its supervisor to handle.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import trio

from actors import Backoff
from transport import TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

logger = logging.getLogger(__name__)

BACKOFF: Final = Backoff(initial_seconds=0.1, max_seconds=5.0)
"""Pauses between rounds while a store or stream is out."""


@attrs.define
class Outage:
    """Backoff state of one actor; ``what`` names it in logs."""

    what: str
    _delays: Iterator[float] | None = None
    """The pauses of the outage in progress (None: no outage)."""

    @property
    def ongoing(self) -> bool:
        """True while the last round failed on an outage."""
        return self._delays is not None

    async def guard(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``work``; on a retryable transport error, back off and return None.

        Raises:
            TransportError: a non-retryable one (a bug or bad data): let it crash.
        """
        try:
            result = await work()
        except TransportError as exc:
            if not exc.retryable:
                raise
            if self._delays is None:
                logger.warning("%s: %s; retrying until it is back", self.what, exc)
                self._delays = BACKOFF.delays(random.Random())
            await trio.sleep(next(self._delays))
            return None
        if self._delays is not None:
            logger.warning("%s: recovered", self.what)
            self._delays = None
        return result
