"""The client: start runs, look them up, wait for them, watch them; under trio or asyncio.

- `Client` (`_client`): requests over HTTP, or over one WebSocket session under trio;
- `RunHandle`, `RunResult`, `ScheduleHandle` (`_handles`);
- `Watch` (`_watch`): live updates pushed by the server;
- `Servers` (`_servers`): several server URLs, and moving on when one goes away;
- `SessionConnection` (`_connection`): one session over one WebSocket, the I/O half of
  the session protocol, also used by the worker's link (with `auth_headers`, which
  present an API key, and `connect_error`, what a failed connection means).
"""

from ._client import API_KEY_ENV as API_KEY_ENV
from ._client import CA_FILE_ENV as CA_FILE_ENV
from ._client import CLIENT_CERT_ENV as CLIENT_CERT_ENV
from ._client import CLIENT_KEY_ENV as CLIENT_KEY_ENV
from ._client import Client as Client
from ._connection import PushQueue as PushQueue
from ._connection import SessionConnection as SessionConnection
from ._connection import auth_headers as auth_headers
from ._connection import connect_error as connect_error
from ._connection import tls_for as tls_for
from ._handles import RunHandle as RunHandle
from ._handles import RunResult as RunResult
from ._handles import ScheduleHandle as ScheduleHandle
from ._servers import Servers as Servers
from ._servers import parse_server_urls as parse_server_urls
from ._watch import Resync as Resync
from ._watch import Watch as Watch

__all__ = [
    "API_KEY_ENV",
    "CA_FILE_ENV",
    "CLIENT_CERT_ENV",
    "CLIENT_KEY_ENV",
    "Client",
    "PushQueue",
    "Resync",
    "RunHandle",
    "RunResult",
    "ScheduleHandle",
    "Servers",
    "SessionConnection",
    "Watch",
    "auth_headers",
    "connect_error",
    "parse_server_urls",
    "tls_for",
]
