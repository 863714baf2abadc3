"""Redis credentials the server hands to workers, so Redis keeps namespaces apart too.

A worker given no Redis URL of its own asks for credentials when it registers
(`aiki.protocol.RegisterWorker.redis_credentials`). The server, whose own Redis user may
manage users, makes a Redis user for that worker on every node (`USER_PREFIX` and a hash
of the worker's namespace and ID): its password only, the keys of its namespace's run
streams only (``aiki:runs:{<namespace>/*``), and only the commands a worker sends
(`WORKER_COMMANDS`: no ``XADD``, no ``DEL``, nothing of other keys). Another namespace's
streams answer ``NOPERM``.

Credentials last `RedisGrants.seconds` unless renewed; a worker renews them with its
heartbeat well before (each renewal sets a new password: new connections use it, open
ones stay). `GrantSweeper` deletes the users of expired grants on every node, closing
their connections: a worker that died, or was cut off, keeps nothing.

Where Redis has no ACLs, or the server's user may not manage users, the server says so
at start, and a worker that asks is refused with a message saying it needs its own
``--redis-url``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import urllib.parse
from typing import Final

import attrs
import trio

from actors import messages_or_ticks
from transport import StreamError
from transport.redis_streams import RedisStreams

from ..errors import BadRequestError, UnavailableError
from ..protocol import RedisGrant
from ._outages import Outage

logger = logging.getLogger(__name__)

USER_PREFIX: Final = "aiki-w-"
"""The names of the Redis users the server makes (and alone deletes)."""
WORKER_COMMANDS: Final = (
    "ping", "exists", "xreadgroup", "xack", "xdel", "xautoclaim", "xgroup|create", "multi", "exec",
    "client|id", "client|unblock", "client|setinfo", "cluster|slots", "cluster|shards",
    "command", "readonly",
)  # fmt: skip
"""What a worker sends to Redis: reading its streams through the consumer group,
acknowledging and deleting what it ran, claiming what a dead worker left, making its
groups; unblocking its own blocked read; a cluster's map of slots."""


def user_for(namespace: str, worker_id: str) -> str:
    """The Redis user of a worker (its name is not guessable from outside the server, and
    the same at each renewal)."""
    digest = hashlib.sha256(f"{namespace}\0{worker_id}".encode()).hexdigest()[:32]
    return f"{USER_PREFIX}{digest}"


def key_pattern(namespace: str) -> str:
    """The keys of ``namespace``'s run streams (`aiki.protocol.stream_for`), as an ACL
    key pattern (a namespace has no glob characters, and no ``/``)."""
    return f"aiki:runs:{{{namespace}/*"


def without_credentials(url: str) -> str:
    """``url`` with its user and password removed (what a worker is told)."""
    parts = urllib.parse.urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=hosts).geturl()


@attrs.define
class RedisGrants:
    """Makes, renews and ends workers' Redis users (see the module docstring).

    Args:
        streams: the server's Redis client (its user may manage users).
        url: where workers find Redis (no credentials in it).
        seconds: how long credentials last without a renewal.
        unavailable: why the server cannot grant (None: it can).
    """

    streams: RedisStreams
    url: str
    seconds: float
    unavailable: str | None = None

    async def issue(self, namespace: str, worker_id: str) -> RedisGrant:
        """Fresh credentials for the worker (its user made, or its password replaced).

        Raises:
            aiki.BadRequestError: this server cannot grant Redis credentials.
            aiki.UnavailableError: Redis cannot be reached.
        """
        if self.unavailable is not None:
            raise BadRequestError(
                f"this server hands out no Redis credentials ({self.unavailable}): start the "
                "worker with a Redis URL of its own (--redis-url, AIKI_REDIS_URL)",
                errors=("not available on this server @ $.redis_credentials",),
            )
        username, password = user_for(namespace, worker_id), secrets.token_urlsafe(32)
        try:
            await self.streams.grant_user(
                username, password, key_patterns=(key_pattern(namespace),),
                commands=WORKER_COMMANDS, seconds=self.seconds,
            )  # fmt: skip
        except StreamError as exc:
            raise UnavailableError(f"cannot grant Redis credentials now: {exc}") from exc
        return RedisGrant(url=self.url, username=username, password=password, seconds=self.seconds)

    async def sweep(self) -> int:
        """Delete the users of expired grants on every node; how many."""
        expired = await self.streams.expired_users(USER_PREFIX)
        await self.streams.drop_users(expired)
        return len(expired)


@attrs.define
class GrantSweeper:
    """Actor: every quarter of the grants' lifetime, ends the expired ones."""

    grants: RedisGrants

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep until the mailbox closes."""
        outage = Outage("Redis grant sweeper")
        task_status.started()
        async for _ in messages_or_ticks(inbox, max(1.0, self.grants.seconds / 4)):
            ended = await outage.guard(self.grants.sweep)
            if ended:
                logger.info("ended %d expired Redis grants of workers", ended)
