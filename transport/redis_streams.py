"""Redis Streams over redis-py's sync client, run in threads behind trio.

`RedisStreams` is the shared, thread-limited client for short commands: publishing
(pipelined batches, one thread hop per batch), consumer-group creation, acks, pending
inspection and ``XAUTOCLAIM``. Blocking reads go through a `StreamReader`, which owns
a dedicated connection and thread so that a long ``XREADGROUP ... BLOCK`` can never
starve the shared pool.

The URL names one Redis server or a Redis Cluster (see `parse_redis_url`). On
a cluster every command names keys of one hash slot, so a reader reads the streams of
one slot (`RedisStreams.read_groups` groups them), on a connection to the node that owns
that slot; a pipelined publish is sent to each node its streams live on, in parallel.

Cancellation of a blocked read is the subtle part: Redis delivers entries to whoever
is blocked, so an abandoned read would swallow the next entry (it would sit in the
consumer's pending list until claimed). `StreamReader.read` therefore never abandons
its thread: on cancel it sends ``CLIENT UNBLOCK`` for its connection, waits for the
read to return, and keeps anything that arrived meanwhile for the next call.

Every entry carries one field, ``m``, holding the payload bytes (see `transport.codec`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final, TypeVar, cast

import redis
import redis.cluster
import redis.exceptions
import trio

from ._errors import StreamError, StreamUnavailableError
from ._redis_clients import SLOTS as SLOTS
from ._redis_clients import RedisTarget as RedisTarget
from ._redis_clients import hash_slot as hash_slot
from ._redis_clients import parse_redis_url as parse_redis_url
from ._redis_values import FIELD as FIELD
from ._redis_values import USERS_KEY_PREFIX as USERS_KEY_PREFIX
from ._redis_values import AutoClaimed as AutoClaimed
from ._redis_values import PendingEntry as PendingEntry
from ._redis_values import PendingSummary as PendingSummary
from ._redis_values import RedisCredentials as RedisCredentials
from ._redis_values import StreamEntry as StreamEntry
from ._redis_values import entries, mapped_errors, read_reply, text
from ._threads import run_sync_interruptible

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

T = TypeVar("T")

logger = logging.getLogger(__name__)

MAX_BLOCK_MS: Final = 10_000
"""Upper bound for ``block_ms``: a blocked read always comes back within this time."""

_UNBLOCK_RETRY_SECONDS: Final = 0.002
_SOCKET_SLACK_SECONDS: Final = 5.0


class RedisStreams:
    """Short Redis Streams commands from trio, via a thread-limited redis-py client.

    Args:
        url: ``redis://host:port/db``, or a cluster's ``redis+cluster://host:port,...``.
        max_threads: at most this many commands run at once (and as many connections
            per node).
        socket_timeout_seconds: a command that gets no reply in this time fails with
            `StreamUnavailableError` (the bound on a thread stuck on a dead server).

        credentials: what to authenticate with instead of the URL's user and password
            (and as they change: `RedisCredentials`).

    Raises:
        ValueError: ``url`` is not a Redis URL (the message says why).
    """

    def __init__(
        self,
        url: str,
        *,
        max_threads: int = 8,
        socket_timeout_seconds: float = 5.0,
        credentials: RedisCredentials | None = None,
    ) -> None:
        self.url = url
        self.target: RedisTarget = parse_redis_url(url)
        self.credentials = credentials
        self._limiter = trio.CapacityLimiter(max_threads)
        self._client = self.target.client(
            socket_timeout=socket_timeout_seconds, max_connections=max_threads,
            **self.connection_options(),
        )  # fmt: skip

    def connection_options(self) -> dict[str, object]:
        """What every client of this one's connections takes besides its URL."""
        return {} if self.credentials is None else {"credential_provider": self.credentials}

    @property
    def cluster(self) -> bool:
        """Whether Redis is a cluster (commands name keys of one slot)."""
        return self.target.cluster

    def read_groups(self, streams: Sequence[str]) -> list[tuple[str, ...]]:
        """``streams`` split into the groups one `StreamReader` can read at once: all of
        them on one server, those of each hash slot on a cluster (in first-seen order)."""
        if not self.cluster:
            return [tuple(streams)] if streams else []
        groups: dict[int, list[str]] = {}
        for stream in streams:
            groups.setdefault(hash_slot(stream), []).append(stream)
        return [tuple(group) for group in groups.values()]

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        def call() -> T:
            with mapped_errors(what):
                return fn()

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await trio.to_thread.run_sync(self._client.close)

    async def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            StreamUnavailableError: it does not.
        """
        await self._call("PING", self._client.ping)

    async def publish(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        """Append one entry to ``stream`` and return its id.

        Args:
            maxlen: trim the stream to about this many entries (``MAXLEN ~``).

        Cancellation: the entry may or may not have been added.
        """
        return await self._call(
            "XADD", lambda: text(self._client.xadd(stream, {FIELD: payload}, maxlen=maxlen))
        )

    async def publish_many(self, entries: Sequence[tuple[str, bytes]]) -> list[str]:
        """Append many ``(stream, payload)`` entries in one pipelined round trip.

        Returns:
            The new entry ids, in order.

        Cancellation: any prefix of the batch may have been added.
        """
        if not entries:
            return []

        def pipelined() -> list[str]:
            pipe = self._client.pipeline(transaction=False)
            for stream, payload in entries:
                pipe.xadd(stream, {FIELD: payload})
            return [text(entry_id) for entry_id in pipe.execute()]

        return await self._call("XADD pipeline", pipelined)

    async def ensure_group(self, stream: str, group: str, *, start_id: str = "0") -> bool:
        """Create consumer group ``group`` on ``stream`` (and the stream) unless it exists.

        Args:
            start_id: the first entry the group delivers: ``"0"`` for everything,
                ``"$"`` for entries added from now on.

        Returns:
            True if the group was created, False if it existed already.
        """

        def create() -> bool:
            try:
                self._client.xgroup_create(stream, group, id=start_id, mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return False
                raise
            return True

        return await self._call("XGROUP CREATE", create)

    async def ack(
        self, stream: str, group: str, entry_ids: Sequence[str], *, delete: bool = False
    ) -> int:
        """Acknowledge entries (remove them from the group's pending list); return how many.

        Args:
            delete: also delete the entries from the stream (``XDEL``), in the same round
                trip; right when one group consumes the stream and acked entries are done.
        """
        if not entry_ids:
            return 0
        if not delete:
            return await self._call(
                "XACK", lambda: int(self._client.xack(stream, group, *entry_ids))
            )

        def ack_and_delete() -> int:
            pipe = self._client.pipeline(transaction=False)
            pipe.xack(stream, group, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            acked, _deleted = pipe.execute()
            return int(acked)

        return await self._call("XACK+XDEL", ack_and_delete)

    async def pending_summary(self, stream: str, group: str) -> PendingSummary:
        """Return the group's pending-entries summary on ``stream``."""

        def summary() -> PendingSummary:
            raw = self._client.xpending(stream, group)
            smallest, largest = raw.get("min"), raw.get("max")
            return PendingSummary(
                count=int(raw["pending"]),
                smallest_id=None if smallest is None else text(smallest),
                largest_id=None if largest is None else text(largest),
                consumers={
                    text(item["name"]): int(item["pending"]) for item in raw.get("consumers") or ()
                },
            )

        return await self._call("XPENDING", summary)

    async def pending(
        self,
        stream: str,
        group: str,
        *,
        count: int = 100,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
    ) -> list[PendingEntry]:
        """List up to ``count`` pending entries, oldest first, optionally filtered."""

        def entries() -> list[PendingEntry]:
            rows = self._client.xpending_range(
                stream,
                group,
                min="-",
                max="+",
                count=count,
                consumername=consumer,
                idle=min_idle_ms,
            )
            return [
                PendingEntry(
                    entry_id=text(row["message_id"]),
                    consumer=text(row["consumer"]),
                    idle_ms=int(row["time_since_delivered"]),
                    deliveries=int(row["times_delivered"]),
                )
                for row in rows
            ]

        return await self._call("XPENDING", entries)

    async def autoclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        start: str = "0-0",
        count: int = 100,
    ) -> AutoClaimed:
        """Take over entries pending longer than ``min_idle_ms`` (their consumer likely died).

        Claimed entries move to ``consumer``'s pending list with their delivery count
        increased. Continue from ``next_start`` until it is ``"0-0"`` to scan everything.
        """

        def claim() -> AutoClaimed:
            raw = self._client.xautoclaim(
                stream, group, consumer, min_idle_ms, start_id=start, count=count
            )
            deleted = raw[2] if len(raw) > 2 else ()  # Redis >= 7 reports deleted ids
            return AutoClaimed(
                entries=tuple(entries(stream, raw[1])),
                next_start=text(raw[0]),
                deleted_ids=tuple(text(entry_id) for entry_id in deleted),
            )

        return await self._call("XAUTOCLAIM", claim)

    async def length(self, stream: str) -> int:
        """Return the number of entries in ``stream`` (0 if it does not exist)."""
        return await self._call("XLEN", lambda: int(self._client.xlen(stream)))

    async def delete(self, *keys: str) -> int:
        """Delete keys (streams and their groups); return how many existed."""
        if not keys:
            return 0
        return await self._call("DEL", lambda: int(self._client.delete(*keys)))

    # -- Redis users (ACL) -----------------------------------------------------------------
    def _on_every_node(self, *command: str) -> list[object]:
        """Run ``command`` on the one server, or on every node of the cluster (ACL rules
        are each node's own); the replies (blocking)."""
        if not self.cluster:
            return [self._client.execute_command(*command)]  # type: ignore[no-untyped-call]
        cluster = cast("redis.cluster.RedisCluster", self._client)
        replies = cluster.execute_command(  # type: ignore[no-untyped-call]
            *command, target_nodes=redis.cluster.RedisCluster.ALL_NODES
        )
        return list(replies.values()) if isinstance(replies, dict) else [replies]

    async def user_management(self) -> str | None:
        """Why this client cannot grant Redis users (`grant_user`), or None if it can: Redis
        before 6 has no ACLs, and the client's own user may not be allowed ``ACL``."""
        probe = f"aiki-probe-{trio.current_time():.0f}-{id(self)}"
        try:
            await self._call("ACL SETUSER", lambda: self._on_every_node("ACL", "SETUSER", probe))
            await self._call("ACL DELUSER", lambda: self._on_every_node("ACL", "DELUSER", probe))
        except StreamError as exc:
            return str(exc)
        return None

    async def grant_user(
        self,
        name: str,
        password: str,
        *,
        key_patterns: Sequence[str],
        commands: Sequence[str],
        seconds: float,
    ) -> None:
        """Make (or remake) the Redis user ``name`` on every node: this password only, the
        keys that match ``key_patterns`` only, ``commands`` only (``xack``,
        ``client|id``), no channels; for ``seconds`` (`expired_users`). Connections
        already authenticated as it stay open.

        Raises:
            StreamUnavailableError: Redis cannot be reached.
            StreamError: it refused (no ACLs, or this client may not manage users).
        """
        rules = ["reset", "on", f">{password}", *(f"~{pattern}" for pattern in key_patterns),
                 "resetchannels", "-@all", *(f"+{command}" for command in commands)]  # fmt: skip
        expiry = max(1, int(seconds + 0.999))
        # Its expiry first: a grant cut short by a crash still ends.
        await self._call("SET", lambda: self._client.set(f"{USERS_KEY_PREFIX}{name}", 1, ex=expiry))
        await self._call("ACL SETUSER", lambda: self._on_every_node("ACL", "SETUSER", name, *rules))

    async def expired_users(self, prefix: str) -> list[str]:
        """Users named ``prefix...`` on any node whose grant has expired."""

        def expired() -> list[str]:
            names: set[str] = set()
            for reply in self._on_every_node("ACL", "USERS"):
                names.update(text(name) for name in cast("list[object]", reply))
            ours = sorted(name for name in names if name.startswith(prefix))
            return [name for name in ours if not self._client.exists(f"{USERS_KEY_PREFIX}{name}")]

        return await self._call("ACL USERS", expired)

    async def drop_users(self, names: Sequence[str]) -> None:
        """Delete these users on every node (their connections are closed)."""
        if names:
            await self._call("ACL DELUSER", lambda: self._on_every_node("ACL", "DELUSER", *names))
            await self._call("DEL", lambda: [self._client.delete(f"{USERS_KEY_PREFIX}{name}")
                                             for name in names])  # fmt: skip

    @contextlib.asynccontextmanager
    async def open_reader(
        self, group: str, consumer: str, streams: Sequence[str] = ()
    ) -> AsyncIterator[StreamReader]:
        """Open a `StreamReader` for ``consumer`` in ``group``, on its own connection.

        On a cluster, the reader connects to the node that owns the slot of ``streams``
        (one of `read_groups`'s groups): it reads those streams only.

        Raises:
            ValueError: on a cluster, ``streams`` is empty or spans several slots.
            StreamUnavailableError: the node cannot be reached.
        """
        node_url = self.url
        if self.cluster:
            node_url = await self._call("slot owner", lambda: self._slot_owner(streams))
        reader = await trio.to_thread.run_sync(StreamReader, self, group, consumer, node_url)
        try:
            yield reader
        finally:
            with trio.move_on_after(5, shield=True):
                await trio.to_thread.run_sync(reader.close_sync)

    def _slot_owner(self, streams: Sequence[str]) -> str:
        """The URL of the node owning the one slot of ``streams`` (blocking; a cluster's).

        Asks through the cluster client first, so a slot that moved (a failover) is
        followed and the client's slot map refreshed before the owner is looked up.
        """
        slots = {hash_slot(stream) for stream in streams}
        if len(slots) != 1:
            raise ValueError(f"a cluster reader reads streams of one slot; got {len(slots)}")
        cluster = cast("redis.cluster.RedisCluster", self._client)
        cluster.exists(streams[0])
        node = cluster.get_node_from_key(streams[0])  # type: ignore[no-untyped-call]
        return self.target.node_url(node.host, int(node.port))


class StreamReader:
    """One consumer's blocking ``XREADGROUP``, on a dedicated connection and thread.

    Build it with `RedisStreams.open_reader`. Not for concurrent use: one read at a time.
    """

    def __init__(
        self, streams: RedisStreams, group: str, consumer: str, node_url: str | None = None
    ) -> None:
        self.group = group
        self.consumer = consumer
        self._limiter = trio.CapacityLimiter(1)
        self._stash: list[StreamEntry] = []
        self._client_id: int | None = None
        url = streams.url if node_url is None else node_url
        with mapped_errors("connect"):
            options = streams.connection_options()
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=MAX_BLOCK_MS / 1000 + _SOCKET_SLACK_SECONDS,
                socket_connect_timeout=5.0,
                health_check_interval=0,
                single_connection_client=True,
                **options,
            )
            # Unblocks this reader's read on its node (its own pool: connected on first use).
            self._control = redis.Redis.from_url(
                url, socket_timeout=5.0, socket_connect_timeout=5.0, max_connections=1,
                **options,
            )  # fmt: skip
            connection = self._client.connection
            assert connection is not None
            connection.register_connect_callback(self._remember_client_id)  # type: ignore[no-untyped-call]
            self._client_id = int(self._client.client_id())

    def _remember_client_id(self, connection: redis.Connection) -> None:
        connection.send_command("CLIENT", "ID")  # type: ignore[no-untyped-call]
        self._client_id = int(connection.read_response())

    def close_sync(self) -> None:
        """Close the reader's connections (blocking; `RedisStreams.open_reader` calls it)."""
        self._client.close()
        self._control.close()

    async def _unblock(self, client_id: int) -> bool:
        def unblock() -> bool:
            with mapped_errors("CLIENT UNBLOCK"):
                return bool(self._control.client_unblock(client_id))

        return await trio.to_thread.run_sync(unblock)

    async def read(
        self, streams: Sequence[str], *, count: int, block_ms: int | None = None
    ) -> list[StreamEntry]:
        """Read up to ``count`` new entries (``>``) from ``streams`` for this consumer.

        Args:
            block_ms: wait up to this long for an entry (at most `MAX_BLOCK_MS`);
                None returns at once.

        Returns:
            Entries, possibly none. They are pending for this consumer until acked.

        Raises:
            ValueError: ``block_ms`` out of range or ``count`` < 1.
            StreamError: e.g. a group does not exist (create it with ``ensure_group``).
            StreamUnavailableError: Redis is unreachable.

        Cancellation: loses nothing. The blocked command is unblocked on the server and
            awaited; entries it had already received are returned by the next `read`.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if block_ms is not None and not 0 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"block_ms must be within 0..{MAX_BLOCK_MS}, got {block_ms}")
        if self._stash:
            taken, self._stash = self._stash[:count], self._stash[count:]
            return taken
        return await self._run_read({stream: ">" for stream in streams}, count, block_ms)

    async def read_own_pending(self, streams: Sequence[str], *, count: int) -> list[StreamEntry]:
        """Re-read entries delivered to this consumer earlier but never acked (id ``0``).

        Use it when a consumer restarts under the same name.
        """
        return await self._run_read({stream: "0" for stream in streams}, count, None)

    async def _run_read(
        self, streams: Mapping[str, str], count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        def xreadgroup() -> None:
            with mapped_errors("XREADGROUP"):
                reply = self._client.xreadgroup(
                    self.group,
                    self.consumer,
                    dict(streams),  # type: ignore[arg-type]
                    count=count,
                    block=block_ms,
                )
            # Stashed in the thread, so a read whose caller was cancelled loses nothing.
            self._stash.extend(read_reply(reply))

        await run_sync_interruptible(
            xreadgroup,
            limiter=self._limiter,
            interrupt=self._unblock_until_finished,
            interrupt_grace_seconds=(block_ms or 0) / 1000 + 1,
        )
        taken, self._stash = self._stash[:count], self._stash[count:]
        return taken

    async def _unblock_until_finished(self, finished: Callable[[], bool]) -> None:
        # The read may not have reached Redis yet, so CLIENT UNBLOCK can miss it: retry.
        while not finished():
            if self._client_id is not None:
                with contextlib.suppress(StreamUnavailableError):
                    if await self._unblock(self._client_id):
                        return
            await trio.sleep(_UNBLOCK_RETRY_SECONDS)


@contextlib.asynccontextmanager
async def open_redis_streams(
    url: str, *, max_threads: int = 8, credentials: RedisCredentials | None = None
) -> AsyncIterator[RedisStreams]:
    """Open a `RedisStreams` client for the duration of the block."""
    streams = RedisStreams(url, max_threads=max_threads, credentials=credentials)
    try:
        yield streams
    finally:
        with trio.move_on_after(5, shield=True):
            await streams.aclose()
