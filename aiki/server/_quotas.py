"""Request quotas per API key: a token bucket each, decided without I/O.

Every request a key makes counts: an HTTP operation, a WebSocket upgrade, and each
request sent over a session. A key may make ``rate`` requests a second on average and
``burst`` at once (a bucket of ``burst`` tokens, refilled at ``rate`` a second); a request
that finds the bucket empty is refused with the seconds until a token is back, and
uses nothing. The HTTP answer is ``429`` with ``Retry-After``; a session's is the
request's error, `aiki.RateLimitedError`, which clients and workers retry after that
time (it is an `aiki.UnavailableError`).

The same buckets, per peer address, slow down wrong keys (`Authentication`): an address
that presented too many keys that are not valid is answered ``429`` before its next key
is even looked up.

Quotas are kept per server process, in memory: a key spread over several servers gets
each one's quota. At most `MAX_KEYS` keys are tracked (the least recently seen are
forgotten first, and start again with a full bucket).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Final

import attrs
import trio

from ..errors import RateLimitedError

MAX_KEYS: Final = 10_000
EPSILON: Final = 1e-9
"""A token short by less than this is a token (clock arithmetic rounds)."""


@attrs.define
class Quotas:
    """The buckets of the keys seen (see the module docstring).

    Args:
        rate: requests a second each key may make on average; 0: no quota.
        burst: requests a key may make at once (the bucket's size); at least 1.
    """

    rate: float = attrs.field(validator=attrs.validators.ge(0))
    burst: float = attrs.field(validator=attrs.validators.ge(1))
    _buckets: collections.OrderedDict[str, tuple[float, float]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )
    """Per key: the tokens left, and when they were counted."""

    def take(self, key: str, now: float) -> float:
        """Count a request of ``key`` at ``now`` (seconds, any monotonic clock): 0.0 if it
        may go ahead, else the seconds until it may (nothing was taken)."""
        if self.rate == 0:
            return 0.0
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1.0 - EPSILON:
            self._keep(key, max(0.0, tokens - 1.0), now)
            return 0.0
        self._keep(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, key: str, now: float) -> float:
        """The seconds until a request of ``key`` at ``now`` would go ahead (0.0: it
        would now); nothing is taken."""
        if self.rate == 0:
            return 0.0
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        return 0.0 if tokens >= 1.0 - EPSILON else (1.0 - tokens) / self.rate

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)


@attrs.define
class KeyQuotas:
    """The server's quotas on its clock: refuses a key's request over its quota with
    `aiki.RateLimitedError`, counting the refusal in ``refused`` (by namespace)."""

    quotas: Quotas
    refused: Callable[[str], None]
    """Counts a refusal, given the key's namespace (``*``: every namespace)."""

    def check(self, prefix: str, namespace: str | None) -> None:
        """Count a request of the key named ``prefix``.

        Raises:
            aiki.RateLimitedError: over its quota (nothing else is done for it).
        """
        wait = self.quotas.take(prefix, trio.current_time())
        if wait > 0:
            self.refused("*" if namespace is None else namespace)
            raise RateLimitedError(
                f"key {prefix} is over its quota of {self.quotas.rate:g} requests a second "
                f"(bursts of {self.quotas.burst:g}): retry in {wait:.3f} s",
                retry_after_seconds=round(wait, 3) or 0.001,
            )
