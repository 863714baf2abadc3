"""The edges: Redis Streams, PostgreSQL, the HTTP/WebSocket server and WebSocket clients,
the wire codec, local services.

Everything third-party (redis-py, psycopg, cattrs, the WebSocket libraries) stays behind
this package: errors are mapped to `TransportError` subclasses here, and nothing above
imports a client library. Builds on `actors`, never on `aiki`.
"""

from ._errors import CodecError as CodecError
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
from ._redis_clients import SLOTS as SLOTS
from ._redis_clients import RedisTarget as RedisTarget
from ._redis_clients import hash_slot as hash_slot
from ._redis_clients import parse_redis_url as parse_redis_url
from .asgi import ServerLimits as ServerLimits
from .asgi import ServerStatistics as ServerStatistics
from .asgi import serve_asgi as serve_asgi
from .codec import WireCodec as WireCodec
from .codec import make_wire_converter as make_wire_converter
from .local_cluster import LocalRedisCluster as LocalRedisCluster
from .local_cluster import start_local_redis_cluster as start_local_redis_cluster
from .local_services import LocalPostgres as LocalPostgres
from .local_services import LocalRedis as LocalRedis
from .local_services import Services as Services
from .local_services import services_from_env as services_from_env
from .local_services import start_local_postgres as start_local_postgres
from .local_services import start_local_redis as start_local_redis
from .migrations import Migration as Migration
from .migrations import apply_migrations as apply_migrations
from .migrations import apply_migrations_sync as apply_migrations_sync
from .migrations import load_migrations as load_migrations
from .postgres import PostgresStore as PostgresStore
from .postgres import Transaction as Transaction
from .postgres import open_postgres_store as open_postgres_store
from .redis_streams import RedisStreams as RedisStreams
from .redis_streams import StreamEntry as StreamEntry
from .redis_streams import StreamReader as StreamReader
from .redis_streams import open_redis_streams as open_redis_streams
from .tls import client_tls as client_tls
from .tls import server_tls as server_tls
from .websocket import WebSocketClient as WebSocketClient
from .websocket import open_websocket as open_websocket

__all__ = [
    "SLOTS",
    "CodecError",
    "LocalPostgres",
    "LocalRedis",
    "LocalRedisCluster",
    "LocalServiceError",
    "Migration",
    "MigrationError",
    "PostgresStore",
    "RedisStreams",
    "RedisTarget",
    "ServerLimits",
    "ServerStatistics",
    "Services",
    "StorageConflictError",
    "StorageError",
    "StorageTimeoutError",
    "StorageUnavailableError",
    "StreamEntry",
    "StreamError",
    "StreamReader",
    "StreamUnavailableError",
    "Transaction",
    "TransportError",
    "UniqueViolationError",
    "WebSocketClient",
    "WebSocketError",
    "WireCodec",
    "apply_migrations",
    "apply_migrations_sync",
    "client_tls",
    "hash_slot",
    "load_migrations",
    "make_wire_converter",
    "open_postgres_store",
    "open_redis_streams",
    "open_websocket",
    "parse_redis_url",
    "serve_asgi",
    "server_tls",
    "services_from_env",
    "start_local_postgres",
    "start_local_redis",
    "start_local_redis_cluster",
]
