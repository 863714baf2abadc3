"""What Redis Streams commands give and take, as plain values: entries, pending lists,
claims and credentials; the decoding of redis-py's replies and the mapping of its errors
to `transport.StreamError` (for `transport.redis_streams`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, cast

import attrs
import redis
import redis.exceptions

from ._errors import StreamError, StreamUnavailableError

FIELD: Final = b"m"
"""The single field of each stream entry; its value is the payload."""


@attrs.frozen
class StreamEntry:
    """One entry read from a stream."""

    stream: str
    entry_id: str
    payload: bytes


@attrs.frozen
class PendingSummary:
    """``XPENDING`` summary of a consumer group on one stream."""

    count: int
    smallest_id: str | None
    largest_id: str | None
    consumers: Mapping[str, int]
    """Pending entries per consumer name."""


@attrs.frozen
class PendingEntry:
    """One delivered-but-unacknowledged entry."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


@attrs.frozen
class AutoClaimed:
    """What ``XAUTOCLAIM`` took over, and where to continue scanning (``"0-0"``: done)."""

    entries: tuple[StreamEntry, ...]
    next_start: str
    deleted_ids: tuple[str, ...]
    """Pending ids whose entries were deleted from the stream (removed from the PEL)."""


class RedisCredentials(redis.CredentialProvider):
    """The user and password a client presents to Redis, which may change while it runs
    (rotated credentials): every new connection authenticates with the latest; open ones
    stay as they are."""

    def __init__(self, username: str, password: str) -> None:
        self._current = (username, password)

    def update(self, username: str, password: str) -> None:
        """Present these from the next connection on."""
        self._current = (username, password)

    @property
    def username(self) -> str:
        """The user presented now."""
        return self._current[0]

    def get_credentials(self) -> tuple[str, str]:
        """(redis-py's hook, called as each connection authenticates.)"""
        return self._current


USERS_KEY_PREFIX: Final = "aiki:users:"
"""``aiki:users:<name>``: present while the user ``<name>`` (`RedisStreams.grant_user`) is
granted; it expires with the grant."""


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Raise redis-py's errors as `StreamUnavailableError` (retryable) or `StreamError`."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StreamUnavailableError(f"redis unavailable during {what}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise StreamError(f"redis rejected {what}: {exc}") from exc


_UNAVAILABLE: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # A cluster mid-failover or resharding: down, slots moving, a node unreachable.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,  # (and MovedError)
    redis.exceptions.RedisClusterException,
)


def text(value: object) -> str:
    """A reply's bytes as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(
    stream: str, raw: Sequence[tuple[bytes, Mapping[bytes, bytes] | None]]
) -> list[StreamEntry]:
    """The entries of ``stream`` in a reply (those deleted while pending left out)."""
    found = []
    for entry_id, fields in raw:
        if fields is None:  # deleted from the stream while pending
            continue
        found.append(StreamEntry(stream, text(entry_id), fields.get(FIELD, b"")))
    return found


def read_reply(reply: object) -> list[StreamEntry]:
    """Normalise an ``XREADGROUP`` reply into entries.

    RESP2 replies ``[[stream, [(id, fields), ...]], ...]``; RESP3 replies
    ``{stream: [[(id, fields), ...]]}``, one level deeper.
    """
    if not reply:
        return []
    pairs = cast(
        "Iterable[tuple[bytes, list[object]]]",
        reply.items() if isinstance(reply, Mapping) else reply,
    )
    found: list[StreamEntry] = []
    for stream, raw in pairs:
        flat = raw[0] if raw and isinstance(raw[0], list) else raw
        found.extend(
            entries(text(stream), cast("list[tuple[bytes, Mapping[bytes, bytes] | None]]", flat))
        )
    return found
