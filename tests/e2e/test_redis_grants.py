"""Redis keeps namespaces apart too: a worker given no Redis URL gets a Redis user of the
server's making that reaches its namespace's streams only, on one Redis and on every node
of a Redis Cluster; the credentials are renewed (a new password each time) and end when
they are not (issue 27: every worker held one Redis URL that reached every tenant)."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator

import redis
import redis.exceptions
import trio

import aiki
from aiki.protocol import Heartbeat, RedisGrant, RegisterWorker, stream_for
from tests._deadline import deadline
from tests._processes import start_aiki
from tests._waiting import wait_until
from transport.redis_streams import parse_redis_url

from . import waits_flows
from .conftest import ONE_SERVER, THREE_SERVERS, Cluster

TOPOLOGIES = (ONE_SERVER, THREE_SERVERS)
GRANT_SECONDS = 6.0
SERVER_ARGS = ["--redis-grant", str(GRANT_SECONDS)]


def _client(grant: RedisGrant, password: str | None = None) -> redis.Redis:
    """A Redis client (a cluster's, for a cluster) acting as the granted user."""
    return parse_redis_url(grant.url).client(
        socket_timeout=5.0, username=grant.username, password=password or grant.password
    )


@contextlib.asynccontextmanager
async def _granted(
    cluster: Cluster, key: str, worker_id: str
) -> AsyncIterator[tuple[aiki.Client, RedisGrant]]:
    """Register ``worker_id`` (no versions) on a session of its own with ``key``, asking
    for Redis credentials; the client (its session open for the block) and the grant."""
    async with aiki.Client(cluster.server_urls, api_key=key) as client:
        reply = await client.call(RegisterWorker(worker_id=worker_id, versions=(),
                                                 incarnation=secrets.token_urlsafe(16),
                                                 redis_credentials=True))  # fmt: skip
        assert reply.redis is not None
        yield client, reply.redis


async def _namespace_key(cluster: Cluster, namespace: str) -> str:
    async with cluster.client("admin") as admin:
        created = await admin.create_key(role="worker", namespace=namespace, name="grants")
    return created.key


@deadline(90)
async def test_a_worker_with_only_a_server_url_and_a_key_serves_runs(cluster: Cluster) -> None:
    """Started with no Redis URL (no AIKI_REDIS_URL either), a worker of the waits flows
    (which the cluster's own workers do not serve) runs a run, and one started after its
    credentials were renewed (a new password) too."""
    worker = start_aiki(
        ["worker", "tests.e2e.waits_flows:waits_worker", "--server-url", cluster.server_urls,
         "--shutdown-grace", "5"],
        cluster.logs / f"worker-{uuid.uuid4().hex[:6]}.log", cluster.env(role="worker"),
    )  # fmt: skip
    try:
        await trio.to_thread.run_sync(worker.wait_ready, r"aiki worker (\S+) serving")
        async with cluster.client() as client:
            first = await waits_flows.quick_flow.start(client, 3)
            with trio.fail_after(30):
                assert (await first.wait_for_status("completed")).success
            await trio.sleep(GRANT_SECONDS * 1.2)  # renewed (at a third) twice, and more
            second = await waits_flows.quick_flow.start(client, 4)
            with trio.fail_after(30):
                assert (await second.wait_for_status("completed")).success
    finally:
        worker.stop()
    assert "Redis" not in worker.log.read_text(errors="replace").split("serving")[0][-300:]


@deadline(90)
async def test_granted_credentials_reach_their_namespace_only(cluster: Cluster) -> None:
    """With namespace A's grant: every worker command on namespace B's streams answers
    NOPERM (XREADGROUP, XACK, XDEL, XAUTOCLAIM, XADD), as do XADD and DEL on A's own;
    A's own streams can be read through the group."""
    key_b = await _namespace_key(cluster, "grants-b")
    async with _granted(cluster, key_b, f"grants-b-{uuid.uuid4().hex[:6]}"):
        pass  # (namespace B's worker: B's Redis user exists too)
    worker_id = f"grants-{uuid.uuid4().hex[:6]}"
    async with _granted(cluster, cluster.keys["worker"], worker_id) as (_, grant):
        own = stream_for("default", "grants-flow", "1", None)
        theirs = stream_for("grants-b", "grants-flow", "1", None)
        redis_a = _client(grant)
        try:
            refused = {
                "XREADGROUP": lambda: redis_a.xreadgroup("aiki-workers", "c", {theirs: ">"}),
                "XACK": lambda: redis_a.xack(theirs, "aiki-workers", "1-0"),
                "XDEL": lambda: redis_a.xdel(theirs, "1-0"),
                "XAUTOCLAIM": lambda: redis_a.xautoclaim(theirs, "aiki-workers", "c", 0),
                "XADD": lambda: redis_a.xadd(theirs, {"m": b"injected"}),
                "XADD own": lambda: redis_a.xadd(own, {"m": b"injected"}),
                "DEL own": lambda: redis_a.delete(own),
                "GET other": lambda: redis_a.get("aiki:users:anything"),
            }
            not_refused = []
            for name, command in refused.items():
                try:
                    await trio.to_thread.run_sync(command)
                except redis.exceptions.NoPermissionError:
                    continue
                not_refused.append(name)
            assert not_refused == []
            await trio.to_thread.run_sync(
                lambda: redis_a.xgroup_create(own, "aiki-workers", id="0", mkstream=True)
            )
            read = await trio.to_thread.run_sync(
                lambda: redis_a.xreadgroup("aiki-workers", "c", {own: ">"}, count=1)
            )
            assert not read  # (nothing queued: but read, not refused)
        finally:
            redis_a.close()


@deadline(90)
async def test_renewal_replaces_the_password_and_an_unrenewed_grant_ends(cluster: Cluster) -> None:
    """A heartbeat asking for renewal gets a new password: the old one no longer
    authenticates; left unrenewed, the user is deleted within the grant's lifetime and a
    sweep, on every node."""
    worker_id = f"grants-{uuid.uuid4().hex[:6]}"
    async with _granted(cluster, cluster.keys["worker"], worker_id) as (client, first):
        ack = await client.call(Heartbeat(worker_id=worker_id, renew_redis=True))
        assert ack.redis is not None
        second = ack.redis
        assert (second.username, second.url) == (first.username, first.url)
        assert second.password != first.password

        def pings(grant: RedisGrant, password: str) -> bool:
            connection = None
            try:  # (a cluster's client connects as it is made)
                connection = _client(grant, password)
                return bool(connection.ping())
            except (redis.exceptions.AuthenticationError,
                    redis.exceptions.RedisClusterException) as exc:  # fmt: skip
                refusal = f"{exc} {exc.__context__}"
                assert "username-password" in refusal, refusal
                return False
            finally:
                if connection is not None:
                    connection.close()

        assert not await trio.to_thread.run_sync(pings, first, first.password)
        assert await trio.to_thread.run_sync(pings, second, second.password)
        renewed_at = trio.current_time()

        async def ended() -> bool:
            return not await trio.to_thread.run_sync(pings, second, second.password)

        with trio.fail_after(GRANT_SECONDS * 2 + 5):
            await wait_until(ended, interval=0.25)
        assert trio.current_time() - renewed_at >= GRANT_SECONDS - 1
