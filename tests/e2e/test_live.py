"""Live run updates over WebSocket, end to end: real server and workers, PG, Redis.

The server here keeps at most 16 updates queued per subscriber, so a stalled subscriber
overflows quickly (and must get a resync marker instead of slowing anything down).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import psycopg
import pytest
import trio
import trio_websocket

import aiki
from tests._deadline import deadline
from tests._processes import start_aiki

from . import waits_flows as flows
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"
SERVER_ARGS = ["--subscriber-queue", "16"]


def _transitions(cluster: Cluster, run_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT to_status, revision FROM aiki_transitions WHERE run_id = %s ORDER BY revision",
            (run_id,),
        ).fetchall()


@deadline(60)
async def test_a_subscriber_sees_every_state_of_a_run_in_order(cluster: Cluster) -> None:
    """Subscribed to the workflow before the run starts: queued, running, sleeping, queued,
    running, completed, each once, in revision order, the last with the output; a watch
    of the run replaying from revision 0 sees the same; both match the stored history."""
    async with cluster.client() as client:
        async with client.watch(workflow=flows.sleeper.workflow) as updates:
            await updates.start()
            handle = await flows.sleeper.start(client, 0.3)
            seen: list[aiki.RunUpdate] = []
            async for update in updates:
                assert isinstance(update, aiki.RunUpdate)
                if update.run_id == handle.run_id:
                    seen.append(update)
                    if update.status == "completed":
                        break
        async with client.watch(handle, after_revision=0) as replayed:
            again = []
            async for update in replayed:
                assert isinstance(update, aiki.RunUpdate)
                again.append(update)
                if update.status == "completed":
                    break
    statuses = [update.status for update in seen]
    assert statuses == ["queued", "running", "sleeping", "queued", "running", "completed"]
    assert [update.revision for update in seen] == list(range(1, len(seen) + 1))
    assert [(update.status, update.revision) for update in again] == [
        (update.status, update.revision) for update in seen
    ]
    assert seen[-1].output == "slept"
    assert [update.previous for update in seen[1:]] == statuses[:-1]
    stored = await trio.to_thread.run_sync(_transitions, cluster, handle.run_id)
    assert stored == [(update.status, update.revision) for update in seen]


@deadline(60)
async def test_a_watch_of_a_run_begins_with_its_state_at_that_moment(cluster: Cluster) -> None:
    """``client.watch(handle)`` yields the run's state when the watch began first (not
    only a later revision): for a run sleeping, then its remaining changes; for a run
    already ended, its end (with the run and its output)."""
    async with cluster.client() as client:
        handle = await flows.sleeper.start(client, 1.0)
        await handle.wait_for_status("sleeping")
        async with client.watch(handle) as updates:
            first = await updates.__anext__()
            later = [await updates.__anext__() for _ in range(3)]
        ended = await handle.wait_for_status("completed")
        async with client.watch(handle) as updates:
            last = await updates.__anext__()
    assert isinstance(first, aiki.RunUpdate)
    assert (first.status, first.reason, first.previous) == ("sleeping", "watch began", None)
    assert [(u.status, u.revision) for u in later if isinstance(u, aiki.RunUpdate)] == [
        ("queued", first.revision + 1), ("running", first.revision + 2),
        ("completed", first.revision + 3),
    ]  # fmt: skip
    assert isinstance(last, aiki.RunUpdate)
    assert (last.status, last.revision, last.output) == ("completed", ended.run.revision, "slept")
    assert last.run is not None


async def _stalled_subscriber(
    cluster: Cluster, nursery: trio.Nursery
) -> trio_websocket.WebSocketConnection:
    """A session subscribed to every run that never reads (tiny receive buffer)."""
    host, port = cluster.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    websocket = await trio_websocket.wrap_client_stream(
        nursery, stream, host, "/api/v1/session", message_queue_size=1,
        extra_headers=[(b"authorization", f"Bearer {cluster.keys['viewer']}".encode())],
    )  # fmt: skip
    await websocket.send_message('{"id": 1, "op": "subscribe", "body": {}}')
    reply = orjson.loads(await websocket.get_message())
    assert "ok" in reply, reply
    return websocket


@deadline(90)
async def test_a_stalled_subscriber_delays_neither_runs_nor_other_subscribers(
    cluster: Cluster,
) -> None:
    """One subscriber never reads while 150 runs complete: every run completes, and a
    reading subscriber sees all of them complete. The stalled one, read at last, gets
    a resync marker: its queue overflowed (so the test did stall it)."""
    async with trio.open_nursery() as nursery:
        stalled = await _stalled_subscriber(cluster, nursery)
        async with cluster.client() as client:
            async with client.watch(
                workflow=flows.quick_flow.workflow, statuses=["completed"]
            ) as live:
                await live.start()
                handles = [await flows.quick_flow.start(client, x) for x in range(150)]
                expected = {handle.run_id for handle in handles}
                completed: set[str] = set()
                async for update in live:
                    assert isinstance(update, aiki.RunUpdate)
                    assert update.status == "completed"
                    completed.add(update.run_id)
                    if completed >= expected:
                        break
            results = [await handle.wait_for_status("completed") for handle in handles]
        assert all(result.success for result in results)
        frames = []
        with trio.move_on_after(10):
            while not any(frame.get("resync") for frame in frames):
                frames.append(orjson.loads(await stalled.get_message()))
        assert any(frame.get("resync") for frame in frames), frames[-3:]
        await stalled.aclose()
        nursery.cancel_scope.cancel()


@deadline(60)
async def test_waiting_and_watching_under_trio_are_pushed_not_polled(cluster: Cluster) -> None:
    """A run sleeps 1.5 s: waiting for it costs one subscribe and one unsubscribe, no
    reads of the run and no long-poll requests."""
    async with cluster.client() as client:
        handle = await flows.sleeper.start(client, 1.5)
        before = dict(client.requests)
        result = await handle.wait_for_status("completed")
        during = {op: n - before.get(op, 0) for op, n in client.requests.items()}
    assert (result.success, result.output, result.run.status) == (True, "slept", "completed")
    assert {op: n for op, n in during.items() if n} == {"subscribe": 1, "unsubscribe": 1}


@deadline(60)
async def test_without_a_session_waiting_falls_back_to_long_polling(cluster: Cluster) -> None:
    """No WebSocket (``session=False``): `wait_for_status` long-polls and still returns;
    `watch` says clearly why it cannot push."""
    async with cluster.client(session=False) as client:
        handle = await flows.sleeper.start(client, 0.2)
        result = await handle.wait_for_status("completed")
        assert result.success
        assert client.requests["wait_run"] >= 1
        with pytest.raises(aiki.PushUnavailableError, match="async with"):
            client.watch(handle)


def test_waiting_and_watching_under_asyncio_are_pushed_not_polled(cluster: Cluster) -> None:
    """The same from an asyncio program: one WebSocket subscription per wait, no HTTP
    reads or long-polls while waiting; a watch sees the run's remaining states."""

    async def main() -> tuple[aiki.RunResult[str], dict[str, int], list[str]]:
        async with asyncio.timeout(60), cluster.client() as client:
            handle = await flows.sleeper.start(client, 1.0)
            before = dict(client.requests)
            result = await handle.wait_for_status("completed")
            during = {op: n - before.get(op, 0) for op, n in client.requests.items()}
            other = await flows.sleeper.start(client, 0.3)
            statuses = []
            async with client.watch(other, after_revision=0) as updates:
                async for update in updates:
                    assert isinstance(update, aiki.RunUpdate)
                    statuses.append(update.status)
                    if update.status == "completed":
                        break
            return result, {op: n for op, n in during.items() if n}, statuses

    result, during, statuses = asyncio.run(main())
    assert (result.success, result.output) == (True, "slept")
    assert during == {"subscribe": 1}
    assert statuses == ["queued", "running", "sleeping", "queued", "running", "completed"]


@deadline(60)
async def test_updates_made_through_one_server_reach_subscribers_of_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Two server instances on one database: a subscriber on the second sees every state
    of a run started through (and executed via) the first."""
    env = {"AIKI_DATABASE_URL": cluster.database_url, "AIKI_REDIS_URL": cluster.redis_url}
    other = start_aiki(["server", "--port", "0"], tmp_path / "other.log", env)
    try:
        other_url = other.wait_ready(r"listening on (\S+)").group(1)
        async with (
            aiki.Client(other_url, api_key=cluster.keys["viewer"]) as watcher,
            cluster.client() as starter,
        ):
            updates = watcher.watch(workflow=flows.quick_flow.workflow)
            await updates.start()
            handle = await flows.quick_flow.start(starter, 4)
            seen = []
            async for update in updates:
                assert isinstance(update, aiki.RunUpdate)
                if update.run_id == handle.run_id:
                    seen.append((update.status, update.revision))
                    if update.status == "completed":
                        break
            await updates.aclose()
    finally:
        other.stop()
    assert seen == [("queued", 1), ("running", 2), ("completed", 3)]


@deadline(60)
async def test_task_progress_is_pushed_live_and_kept_with_the_run(cluster: Cluster) -> None:
    """Tasks report progress (one from trio, one from a thread): a watch asking for
    progress sees each task's reports in order up to the last, between the run's updates;
    `describe_run` keeps the latest of each; a plain watch gets none."""
    async with cluster.client() as client:
        handle = await flows.progress_flow.start(client, 4)
        plain = client.watch(handle, after_revision=0)
        await plain.start()
        reports: dict[str, list[int]] = {}
        async with client.watch(handle, after_revision=0, progress=True) as updates:
            async for item in updates:
                if isinstance(item, aiki.TaskProgress):
                    assert item.run_id == handle.run_id
                    reports.setdefault(item.task, []).append(item.details["done"])
                elif isinstance(item, aiki.RunUpdate) and item.status == "completed":
                    break
        without = []
        async for item in plain:
            without.append(item)
            if isinstance(item, aiki.RunUpdate) and item.status == "completed":
                break
        await plain.aclose()
        details = await client.describe_run(handle.run_id)
    assert set(reports) == {"counting", "counting_in_a_thread"}
    for task, done in reports.items():
        assert done == sorted(done), (task, done)
        assert done[-1] == 4, (task, done)
    assert all(isinstance(item, aiki.RunUpdate) for item in without)
    assert {(p.task, p.details["done"]) for p in details.progress} == {
        ("counting", 4),
        ("counting_in_a_thread", 4),
    }


def test_progress_outside_a_task_is_refused() -> None:
    with pytest.raises(RuntimeError, match="from a task body"):
        aiki.progress(0.5)
