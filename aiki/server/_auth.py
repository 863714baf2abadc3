"""Who is calling: the API key a request or session presents, checked against the stored
keys through a short-lived cache.

A key is looked up at most once per `CACHE_SECONDS` per server: requests in between are
answered from memory (no hash and query per request). A revocation (or an expiry) is
therefore honoured by every server within `CACHE_SECONDS`. A key that is not stored, or
not well formed, is remembered as unknown for the same time, so a flood of bad keys costs
one query per key and second, not one per request; at most `CACHE_ENTRIES` keys are
remembered (the oldest are forgotten first).
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from ..protocol import Role
from .store import keys

CACHE_SECONDS: Final = 1.0
CACHE_ENTRIES: Final = 10_000


@attrs.frozen(kw_only=True)
class Principal:
    """The key a caller proved it holds: what it may do, and where."""

    prefix: str
    role: Role
    namespace: str | None
    """None: every namespace (admin keys)."""
    name: str


@attrs.define
class Authenticator:
    """Turns presented keys into principals (see the module docstring).

    Args:
        lookup: the stored record of a key (`store.keys.verify` in a transaction).
        now: the wall clock (expiry is a wall-clock time).
    """

    lookup: Callable[[str], Awaitable[keys.ApiKey | None]]
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _cache: collections.OrderedDict[str, tuple[float, keys.ApiKey | None]] = attrs.field(
        factory=collections.OrderedDict, init=False
    )
    used: set[str] = attrs.field(factory=set, init=False)
    """Prefixes of keys used since the owner last recorded them (``last_used_at``)."""

    async def principal(self, key: str) -> Principal | None:
        """Who holds ``key``; None if it is not a stored key, or is revoked or expired."""
        found = await self._record(key)
        if found is None or not found.usable_at(self.now()):
            return None
        self.used.add(found.prefix)
        return Principal(prefix=found.prefix, role=found.role, namespace=found.namespace,
                         name=found.name)  # fmt: skip

    async def _record(self, key: str) -> keys.ApiKey | None:
        cached = self._cache.get(key)
        if cached is not None and trio.current_time() - cached[0] < CACHE_SECONDS:
            return cached[1]
        found = await self.lookup(key) if keys.prefix_of(key) is not None else None
        self._cache[key] = (trio.current_time(), found)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return found
