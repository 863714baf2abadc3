"""Riding out PostgreSQL and Redis outages inside an actor, instead of crashing.

A store or stream that is down is an expected condition, not a bug: crashing would burn
the supervisor's restart budget in seconds and take the server down with the outage.
Actors wrap each round of work in `Outage.guard`; a retryable transport error logs once,
waits a capped exponential backoff, and the round is tried again. Anything else crashes
the actor as usual, for its supervisor to handle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, TypeVar

import attrs
import trio

from transport import TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS: Final = 5.0


@attrs.define
class Outage:
    """Backoff state of one actor; ``what`` names it in logs."""

    what: str
    _delay: float = 0.0

    @property
    def ongoing(self) -> bool:
        """True while the last round failed on an outage."""
        return self._delay > 0

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
            if not self._delay:
                logger.warning("%s: %s; retrying until it is back", self.what, exc)
            self._delay = min(MAX_BACKOFF_SECONDS, max(0.1, self._delay * 2))
            await trio.sleep(self._delay)
            return None
        if self._delay:
            logger.warning("%s: recovered", self.what)
            self._delay = 0.0
        return result
