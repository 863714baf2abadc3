"""The edges: Redis Streams, PostgreSQL, the HTTP/WebSocket server and WebSocket clients,
local services.

Everything third-party (redis-py, psycopg, hypercorn, the WebSocket libraries) stays
behind this package: errors are mapped to `TransportError` subclasses here, and nothing
above imports a client library. Builds on `actors`, never on `aiki`.

Each edge is its own module, imported by what uses it, so a process loads only the
drivers it needs (a client that starts runs loads no database driver):

- `transport.postgres` and `transport.migrations`: PostgreSQL;
- `transport.redis_streams`: Redis Streams, one server or a Redis Cluster;
- `transport.asgi`: the HTTP/WebSocket server (hypercorn);
- `transport.websocket`: WebSocket clients (trio-websocket under trio, websockets under
  asyncio, loaded on first connect);
- `transport.tls`: TLS contexts;
- `transport.local_services` and `transport.local_cluster`: local PostgreSQL, Redis and
  Redis Cluster for development and tests.

This package itself holds only the error types.
"""

from ._errors import LocalServiceError as LocalServiceError
from ._errors import MigrationError as MigrationError
from ._errors import StorageConflictError as StorageConflictError
from ._errors import StorageError as StorageError
from ._errors import StorageTimeoutError as StorageTimeoutError
from ._errors import StorageUnavailableError as StorageUnavailableError
from ._errors import StreamError as StreamError
from ._errors import StreamUnavailableError as StreamUnavailableError
from ._errors import TransportError as TransportError
from ._errors import UniqueViolationError as UniqueViolationError
from ._errors import WebSocketError as WebSocketError

__all__ = [
    "LocalServiceError",
    "MigrationError",
    "StorageConflictError",
    "StorageError",
    "StorageTimeoutError",
    "StorageUnavailableError",
    "StreamError",
    "StreamUnavailableError",
    "TransportError",
    "UniqueViolationError",
    "WebSocketError",
]
