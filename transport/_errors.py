"""Errors of the transport layer. Third-party errors (psycopg, redis-py, the WebSocket
libraries) are mapped to these inside `transport/`, so nothing above it handles a
library's exception types.

``retryable`` tells callers whether the same operation may succeed if tried again
later (a connection dropped, a serialization conflict) or will fail the same way.
"""

from __future__ import annotations

from typing import Final

import attrs

MAX_REFUSAL_BYTES: Final = 4096
"""How much of a refused WebSocket handshake's answer is kept (for the error it explains)."""


@attrs.define(auto_exc=True)
class TransportError(Exception):
    """Base class of every transport error."""

    message: str
    retryable: bool = False

    def __str__(self) -> str:
        return self.message


@attrs.define(auto_exc=True)
class LocalServiceError(TransportError):
    """A local PostgreSQL or Redis could not be found, started or stopped."""


@attrs.define(auto_exc=True)
class StorageError(TransportError):
    """PostgreSQL rejected an operation (a bug or bad data; not retryable by default)."""

    sqlstate: str | None = None


@attrs.define(auto_exc=True)
class StorageUnavailableError(StorageError):
    """PostgreSQL cannot be reached or the pool had no connection in time. Retryable."""

    retryable: bool = True


@attrs.define(auto_exc=True)
class StorageConflictError(StorageError):
    """A concurrent transaction conflicted (serialization failure, deadlock). Retryable."""

    retryable: bool = True


@attrs.define(auto_exc=True)
class UniqueViolationError(StorageError):
    """A row with the same unique key exists already."""

    constraint: str | None = None


@attrs.define(auto_exc=True)
class StorageTimeoutError(StorageError):
    """A statement ran past ``statement_timeout`` or was cancelled. Retryable."""

    retryable: bool = True


@attrs.define(auto_exc=True)
class MigrationError(StorageError):
    """A schema migration is missing, changed after it was applied, or failed."""


@attrs.define(auto_exc=True)
class StreamError(TransportError):
    """Redis rejected a streams command (e.g. the consumer group does not exist)."""


@attrs.define(auto_exc=True)
class StreamUnavailableError(StreamError):
    """Redis cannot be reached or timed out. Retryable."""

    retryable: bool = True


@attrs.define(auto_exc=True)
class WebSocketError(TransportError):
    """A WebSocket could not be opened, or it closed or broke. Retryable, unless the
    server refused the handshake with a 4xx (``status``, and its answer in ``body``)."""

    retryable: bool = True
    status: int | None = None
    """The HTTP status the server refused the handshake with, if it did."""
    body: bytes = b""
    """The start of the server's answer to a refused handshake (`MAX_REFUSAL_BYTES`)."""

    @classmethod
    def refused(cls, url: str, status: int, body: bytes | bytearray | None) -> WebSocketError:
        """The error for a handshake ``url`` answered with ``status`` instead of 101."""
        return cls(
            f"{url} refused the WebSocket with HTTP {status}",
            retryable=status >= 500,
            status=status,
            body=bytes(body or b"")[:MAX_REFUSAL_BYTES],
        )
