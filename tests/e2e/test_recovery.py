"""Every failure path on its own: a killed or frozen worker, entries of a dead consumer,
Redis losing data or going away, PostgreSQL going away, shutdown, a root that gives up.

The module runs its own PostgreSQL and Redis (so it can stop and restart them) and short
timeouts: claims expire after 2 s, entries idle 1 s are taken over, runs published 8 s
ago and still queued are published again.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import trio

import aiki
from aiki.protocol import QUEUED_RUN, QueuedRun, RegisterWorker, stream_for
from tests._deadline import deadline
from tests._processes import AikiProcess, make_keys, start_aiki
from tests._waiting import wait_until
from transport.local_services import (
    LocalPostgres,
    LocalRedis,
    start_local_postgres,
    start_local_redis,
)

from . import recovery_flows as flows
from .conftest import Cluster, cli

CLAIM_TIMEOUT = 2.0
SWEEP_INTERVAL = CLAIM_TIMEOUT / 4
MAX_LOST = 3
TARGET = "tests.e2e.recovery_flows:recovery_worker"
POISON = "tests.e2e.recovery_flows:poison_worker"


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[LocalPostgres, LocalRedis]]:
    base = Path(tempfile.mkdtemp(prefix="aiki-recovery-"))
    postgres = start_local_postgres(base / "postgres", fsync=False)
    redis_server = start_local_redis(base / "redis")
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE e2e_effects (key text, task text, "
                     "at timestamptz DEFAULT clock_timestamp())")  # fmt: skip
        conn.execute("CREATE TABLE e2e_gates (key text PRIMARY KEY)")
    try:
        yield postgres, redis_server
    finally:
        redis_server.remove()
        postgres.remove()


@pytest.fixture(scope="module")
def cluster(services: tuple[LocalPostgres, LocalRedis]) -> Iterator[Cluster]:
    postgres, redis_server = services
    logs = Path(tempfile.mkdtemp(prefix="aiki-recovery-logs-"))
    found = Cluster(
        "", postgres.url, redis_server.url, logs, None, [],  # type: ignore[arg-type]
        ["--claim-timeout", str(CLAIM_TIMEOUT), "--redelivery-timeout", "8", "--timer-scan", "1",
         "--max-lost-executions", str(MAX_LOST)],
        ["--heartbeat", "0.3", "--claim-idle", "1"],
    )  # fmt: skip
    try:
        found.start_server(port=0)
        found.keys = make_keys(postgres.url, found.url)
        for _ in range(2):
            found.workers.append(found.start_worker(TARGET, grace=2)[0])
        yield found
    finally:
        for process in [*found.workers, found.server]:
            if process is not None:
                process.stop()


def _query(cluster: Cluster, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


async def _q(
    cluster: Cluster, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return await trio.to_thread.run_sync(_query, cluster, sql, params)


async def _holder(cluster: Cluster, run_id: str) -> str | None:
    rows = await _q(cluster, "SELECT worker_id FROM aiki_runs WHERE id = %s AND status = "
                             "'running'", (run_id,))  # fmt: skip
    return str(rows[0][0]) if rows and rows[0][0] else None


async def _open_gate(cluster: Cluster, key: str) -> None:
    await _q(cluster, "INSERT INTO e2e_gates VALUES (%s) RETURNING key", (key,))


def _worker_pid(cluster: Cluster, worker_id: str) -> AikiProcess:
    for process in cluster.workers:
        if worker_id in process.ready_line:
            return process
    raise AssertionError(f"no process for worker {worker_id}")


async def _running_somewhere(cluster: Cluster, handle: aiki.RunHandle[str]) -> str:
    async def held() -> bool:
        return await _holder(cluster, handle.run_id) is not None

    await wait_until(held)
    holder = await _holder(cluster, handle.run_id)
    assert holder is not None
    return holder


@deadline(60)
async def test_recovery_after_a_worker_is_killed_is_bounded_by_the_claim_timeout(
    cluster: Cluster,
) -> None:
    """SIGKILL the worker holding a run: the run is queued again within the claim timeout
    plus one sweep interval of the kill, and another worker completes it."""
    key = f"kill-{uuid.uuid4().hex[:6]}"
    async with cluster.client() as client:
        handle = await flows.gating_flow.start(client, key)
        holder = await _running_somewhere(cluster, handle)
        victim = _worker_pid(cluster, holder)
        killed_at = time.time()
        victim.kill()
        cluster.workers.remove(victim)
        await _open_gate(cluster, key)
        result = await handle.wait_for_status("completed")
        cluster.workers.append((await trio.to_thread.run_sync(cluster.start_worker, TARGET))[0])
    assert result.success
    # Released by the stale claim or by the dead worker, whichever the sweeper saw first.
    [(recovered_at,)] = await _q(
        cluster, "SELECT extract(epoch FROM at) FROM aiki_transitions WHERE run_id = %s"
                 " AND reason IN ('recovery', 'worker dead')", (handle.run_id,),
    )  # fmt: skip
    recovery_seconds = float(recovered_at) - killed_at
    print(f"\nrecovery after SIGKILL: {recovery_seconds:.2f} s "
          f"(claim timeout {CLAIM_TIMEOUT} s, sweep every {SWEEP_INTERVAL} s)")  # fmt: skip
    assert recovery_seconds <= CLAIM_TIMEOUT + SWEEP_INTERVAL + 0.5
    assert result.output != f"done by {victim.pid}"


@deadline(60)
async def test_a_worker_started_before_the_server_waits_for_it_then_serves(
    cluster: Cluster,
) -> None:
    """Started before its server (Compose and Kubernetes start things in any order), a
    worker keeps trying with backoff, logging each attempt and why, and serves once the
    server is up (no "supervision gave up" after a few seconds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    worker = cluster.spawn_worker(TARGET, url, grace=2)
    server = None
    try:

        async def retried() -> bool:
            return "attempt 3" in worker.log.read_text()

        with trio.fail_after(30):
            await wait_until(retried)
        assert worker.process.poll() is None, "it waits, it does not give up"
        server = cluster.spawn_server(port)
        await trio.to_thread.run_sync(server.wait_ready, r"listening on")
        await trio.to_thread.run_sync(worker.wait_ready, r"aiki worker \S+ serving")
        async with aiki.Client(url, api_key=cluster.keys["client"]) as client:
            result = await (await flows.simple_flow.start(client, 1)).wait_for_status("completed")
        assert (result.success, result.output) == (True, 2)
    finally:
        worker.stop()
        if server is not None:
            server.stop()
    log = worker.log.read_text()
    assert f"the Aiki server at {url} is not reachable yet" in log
    assert "supervision gave up" not in log


@deadline(90)
async def test_a_poison_pill_run_fails_after_the_configured_lost_executions(
    cluster: Cluster,
) -> None:
    """A task that kills its worker process every time: after ``--max-lost-executions``
    lost executions the run fails (``executions_lost``, the reason in ``runs show``)
    instead of taking down one worker after another forever; runs started beside it on
    the same workers complete."""
    key = f"pill-{uuid.uuid4().hex[:6]}"
    pill_workers = [(await trio.to_thread.run_sync(cluster.start_worker, POISON))[0]
                    for _ in range(MAX_LOST + 1)]  # fmt: skip
    try:
        async with cluster.client() as client:
            pill = await flows.poison_flow.start(client, key)
            others = [await flows.simple_flow.start(client, x) for x in range(8)]
            result = await pill.wait_for_status("completed")
            outputs = [(await other.wait_for_status("completed")).output for other in others]
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.code == "executions_lost"
        assert f"lost {MAX_LOST} times" in result.error.message
        assert outputs == [x + 1 for x in range(8)]
        [(crashes,)] = await _q(cluster, "SELECT count(*) FROM e2e_effects WHERE key = %s",
                                (key,))  # fmt: skip
        assert crashes == MAX_LOST
        dead = [worker for worker in pill_workers if worker.process.poll() is not None]
        assert len(dead) == MAX_LOST, "one pill worker is spared"
        shown = await cli(cluster, "runs", "show", pill.run_id)
        assert shown.returncode == 0, shown.stderr
        assert f"execution lost {MAX_LOST} times" in shown.stdout
        assert "worker died or was declared dead" in shown.stdout
    finally:
        for worker in pill_workers:
            worker.stop()


@deadline(60)
async def test_a_frozen_worker_is_fenced_off_and_its_late_result_is_not_recorded(
    cluster: Cluster,
) -> None:
    """SIGSTOP the holder past the claim timeout: the run moves to another worker and
    completes. SIGCONT the zombie: its late task result is refused (stale revision) and it
    stops that run cleanly; the run's outcome stays the survivor's."""
    key = f"freeze-{uuid.uuid4().hex[:6]}"
    async with cluster.client() as client:
        handle = await flows.gating_flow.start(client, key)
        holder = await _running_somewhere(cluster, handle)
        zombie = _worker_pid(cluster, holder)
        os.kill(zombie.pid, signal.SIGSTOP)
        try:

            async def recovered() -> bool:
                holder_now = await _holder(cluster, handle.run_id)
                return holder_now is not None and holder_now != holder

            await wait_until(recovered)
            await _open_gate(cluster, key)
            result = await handle.wait_for_status("completed")
        finally:
            os.kill(zombie.pid, signal.SIGCONT)

        async def zombie_finished_its_body() -> bool:
            rows = await _q(cluster, "SELECT count(*) FROM e2e_effects WHERE key = %s AND task"
                                     " = %s", (key, f"gated by {zombie.pid}"))  # fmt: skip
            return rows[0][0] == 1

        await wait_until(zombie_finished_its_body)  # it resumed and tried to record
        after = await handle.refresh()
    assert result.success
    assert result.output != f"done by {zombie.pid}"
    assert (after.status, after.output) == ("completed", result.output)
    tasks = await _q(cluster, "SELECT output FROM aiki_tasks WHERE run_id = %s", (handle.run_id,))
    assert tasks == [(result.output,)], "only the survivor's result was recorded"
    completions = await _q(cluster, "SELECT count(*) FROM aiki_transitions WHERE run_id = %s"
                                    " AND to_status = 'completed'", (handle.run_id,))  # fmt: skip
    assert completions == [(1,)]
    assert zombie.process.poll() is None, "the zombie stopped the run, not itself"


@deadline(60)
async def test_a_worker_frozen_between_tasks_runs_no_task_once_it_wakes(
    cluster: Cluster,
) -> None:
    """SIGSTOP the holder after a task is recorded and before the next starts; another
    worker completes the run. SIGCONT the zombie: its lease has lapsed, so it confirms the
    claim before the next task body, learns the run is gone, and stops; that body ran once."""
    key = f"between-{uuid.uuid4().hex[:6]}"
    async with cluster.client() as client:
        handle = await flows.between_flow.start(client, key)

        async def first_task_recorded() -> bool:
            rows = await _q(cluster, "SELECT count(*) FROM aiki_tasks WHERE run_id = %s"
                                     " AND state = 'completed'", (handle.run_id,))  # fmt: skip
            return rows[0][0] == 1

        await wait_until(first_task_recorded)
        holder = await _running_somewhere(cluster, handle)
        zombie = _worker_pid(cluster, holder)
        os.kill(zombie.pid, signal.SIGSTOP)
        try:

            async def recovered() -> bool:
                holder_now = await _holder(cluster, handle.run_id)
                return holder_now is not None and holder_now != holder

            await wait_until(recovered)
            await _open_gate(cluster, key)
            result = await handle.wait_for_status("completed")
        finally:
            os.kill(zombie.pid, signal.SIGCONT)

        async def zombie_stopped_the_run() -> bool:
            log = zombie.log.read_text(errors="replace")
            return any(handle.run_id in line and ("claim lost" in line or "taken over" in line)
                       for line in log.splitlines())  # fmt: skip

        await wait_until(zombie_stopped_the_run)
    assert (result.success, result.output) == (True, f"{key}/after")
    effects = await _q(cluster, "SELECT key, count(*) FROM e2e_effects WHERE key LIKE %s"
                                " GROUP BY key ORDER BY key", (f"{key}/%",))  # fmt: skip
    assert effects == [(f"{key}/after", 1), (f"{key}/before", 1)]
    assert zombie.process.poll() is None, "the zombie stopped the run, not itself"


@deadline(60)
async def test_duplicate_entries_of_a_running_run_start_no_second_execution(
    cluster: Cluster,
) -> None:
    """Redelivery and XAUTOCLAIM can put a run's entry in a stream twice. A worker already
    executing the run drops the duplicate (it must not claim it again and run a twin); the
    other worker's claim is refused. The task body runs once."""
    key = f"twins-{uuid.uuid4().hex[:6]}"
    async with cluster.client() as client:
        handle = await flows.gating_flow.start(client, key)
        await _running_somewhere(cluster, handle)
        info = await handle.refresh()
        publisher = redis.Redis.from_url(cluster.redis_url)
        payload = QUEUED_RUN.encode(QueuedRun(run_id=handle.run_id, revision=info.revision))
        last = b""
        for _ in range(6):
            last = publisher.xadd(stream_for("default", "r-gating", "1", None), {b"m": payload})

        async def duplicates_consumed() -> bool:
            [group] = publisher.xinfo_groups(stream_for("default", "r-gating", "1", None))
            return bool(group["last-delivered-id"] == last and group["pending"] <= 1)

        await wait_until(duplicates_consumed)
        await _open_gate(cluster, key)
        result = await handle.wait_for_status("completed")
    assert result.success
    bodies = await _q(cluster, "SELECT count(*) FROM e2e_effects WHERE key = %s AND task"
                               " = 'gated'", (key,))  # fmt: skip
    assert bodies == [(1,)]
    completions = await _q(cluster, "SELECT count(*) FROM aiki_transitions WHERE run_id = %s"
                                    " AND to_status = 'completed'", (handle.run_id,))  # fmt: skip
    assert completions == [(1,)]


@deadline(60)
async def test_an_entry_a_dead_consumer_read_is_taken_over_with_xautoclaim(
    cluster: Cluster,
) -> None:
    """A consumer reads the run's entry and dies before claiming it: after the idle time a
    live worker takes the entry over and runs it (not the redelivery path)."""
    async with cluster.client() as client, cluster.client(role="worker") as registrar:
        # (On a session of its own: registering binds it to worker "registrar".)
        await registrar.call(RegisterWorker(worker_id="registrar",
                                            versions=(flows.takeover_flow.spec(),)))  # fmt: skip
        handle = await flows.takeover_flow.start(client, 1)
        stream = stream_for("default", "r-takeover", "1", None)
        ghost = redis.Redis.from_url(cluster.redis_url)

        def read_as_ghost() -> int:
            ghost.xgroup_create(stream, "aiki-workers", id="0", mkstream=True)
            deadline_at = time.time() + 10
            while time.time() < deadline_at:
                got = ghost.xreadgroup("aiki-workers", "ghost", {stream: ">"}, count=1, block=500)
                if got:
                    return len(got[0][1])
            return 0

        assert await trio.to_thread.run_sync(read_as_ghost) == 1  # and the ghost "dies"
        [(published_before,)] = await _q(
            cluster, "SELECT published_at FROM aiki_runs WHERE id = %s", (handle.run_id,)
        )
        worker, _ = await trio.to_thread.run_sync(
            cluster.start_worker, "tests.e2e.recovery_flows:takeover_worker"
        )
        try:
            result = await handle.wait_for_status("completed")
        finally:
            worker.stop()
    assert (result.success, result.output) == (True, 2)
    [(published_after,)] = await _q(
        cluster, "SELECT published_at FROM aiki_runs WHERE id = %s", (handle.run_id,)
    )
    assert published_after == published_before, "it came from the taken-over entry"


@deadline(90)
async def test_runs_redis_lost_are_published_again(
    cluster: Cluster, services: tuple[LocalPostgres, LocalRedis]
) -> None:
    """Redis restarts without its data while a run is queued and undelivered; the
    dispatcher publishes it again after the redelivery timeout and it completes."""
    _, redis_server = services
    async with cluster.client() as client, cluster.client(role="worker") as registrar:
        # (On a session of its own: registering binds it to worker "registrar".)
        await registrar.call(RegisterWorker(worker_id="registrar",
                                            versions=(flows.takeover_flow.spec(),)))  # fmt: skip
        handle = await flows.takeover_flow.start(client, 10)

        async def published() -> bool:
            rows = await _q(cluster, "SELECT published_at IS NOT NULL FROM aiki_runs"
                                     " WHERE id = %s", (handle.run_id,))  # fmt: skip
            return bool(rows[0][0])

        await wait_until(published)
        await trio.to_thread.run_sync(lambda: redis_server.restart(kill=True))
        worker, _ = await trio.to_thread.run_sync(
            cluster.start_worker, "tests.e2e.recovery_flows:takeover_worker"
        )
        try:
            result = await handle.wait_for_status("completed")
        finally:
            worker.stop()
    assert (result.success, result.output) == (True, 11)


@deadline(120)
async def test_while_redis_is_down_starts_are_accepted_and_workers_pull_runs_from_the_server(
    cluster: Cluster, services: tuple[LocalPostgres, LocalRedis]
) -> None:
    """Redis down: starts still succeed (outbox), workers claim runs through the server and
    complete them; Redis back: new runs flow through the streams again. (The runs start
    with a trigger, so that they are queued later by the timers, not handed to an offered
    slot at their start.)"""
    _, redis_server = services
    queued_later = flows.simple_flow.with_(trigger=aiki.trigger.after(seconds=0))
    redis_server.stop()
    try:
        async with cluster.client() as client:
            handles = [await queued_later.start(client, x) for x in range(5)]
            results = [await handle.wait_for_status("completed") for handle in handles]
        assert [result.output for result in results] == [1, 2, 3, 4, 5]
        pulled = await _q(cluster, "SELECT count(*) FROM aiki_transitions WHERE reason ="
                                   " 'claimed (pull)' AND run_id = ANY(%s::uuid[])",
                          ([h.run_id for h in handles],))  # fmt: skip
        assert pulled == [(5,)]
    finally:
        with trio.move_on_after(60, shield=True):
            await trio.to_thread.run_sync(redis_server.start)
    async with cluster.client() as client:
        after = await queued_later.start(client, 41)

        async def streamed_again() -> bool:
            rows = await _q(cluster, "SELECT reason FROM aiki_transitions WHERE run_id = %s"
                                     " AND to_status = 'running'", (after.run_id,))  # fmt: skip
            return rows == [("claimed",)]

        result = await after.wait_for_status("completed")
        assert result.output == 42
    await wait_until(streamed_again)


@deadline(120)
async def test_a_postgres_outage_gives_retryable_errors_and_loses_no_acknowledged_start(
    cluster: Cluster, services: tuple[LocalPostgres, LocalRedis]
) -> None:
    """While PostgreSQL is down, starts fail with a retryable 503; once it is back, the
    server recovers by itself and every start it acknowledged completes."""
    postgres, _ = services
    acknowledged: list[str] = []
    refused = 0
    async with cluster.client() as client:
        for x in range(3):
            acknowledged.append((await flows.simple_flow.start(client, x)).run_id)
        await trio.to_thread.run_sync(postgres.stop)
        try:
            with pytest.raises(aiki.UnavailableError):
                await flows.simple_flow.start(client, 100)
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.post(f"{cluster.url}/api/v1/get_run",
                                           json={"run_id": acknowledged[0]},
                                           headers=cluster.headers())  # fmt: skip
            assert (response.status_code, response.json()["error"]["code"]) == (503, "unavailable")
            refused += 1
        finally:
            with trio.move_on_after(60, shield=True):
                await trio.to_thread.run_sync(postgres.start)

        async def accepting() -> bool:
            try:
                acknowledged.append((await flows.simple_flow.start(client, 200)).run_id)
            except aiki.UnavailableError:
                return False
            return True

        await wait_until(accepting, interval=0.2)
        results = [await client.handle(run_id).wait_for_status("completed")
                   for run_id in acknowledged]  # fmt: skip
    assert all(result.success for result in results), [r.status for r in results]
    assert refused == 1
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{cluster.url}/healthz")
    assert health.json() == {"status": "ok"}


@deadline(60)
async def test_the_server_shuts_down_gracefully_on_sigterm(cluster: Cluster) -> None:
    """SIGTERM: the server stops within its deadline with exit status 0 (then restarts)."""
    port = int(cluster.url.rsplit(":", 1)[1])
    started = time.monotonic()
    assert await trio.to_thread.run_sync(cluster.server.stop, 15) == 0
    assert time.monotonic() - started < 15
    await trio.to_thread.run_sync(cluster.start_server, port)


@deadline(60)
async def test_the_server_exits_non_zero_when_its_supervision_tree_gives_up(
    services: tuple[LocalPostgres, LocalRedis], tmp_path: Path
) -> None:
    """A dispatcher that crashes over and over (its table is gone) escalates to the root,
    and the process exits with an error instead of limping on."""
    postgres, redis_server = services
    schema = f"doomed_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{postgres.url}?options=-csearch_path%3D{schema}"
    server = start_aiki(["server", "--port", "0"], tmp_path / "doomed.log",
                        {"AIKI_DATABASE_URL": url, "AIKI_REDIS_URL": redis_server.url})  # fmt: skip
    try:
        await trio.to_thread.run_sync(server.wait_ready, r"listening on (\S+)")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE aiki_outbox")
        code = await trio.to_thread.run_sync(server.process.wait, 45)
    finally:
        server.kill()
    assert code != 0
    assert "gave up" in server.log_tail(200)


@deadline(60)
async def test_a_worker_stopped_with_sigterm_leaves_the_worker_list_at_once(
    cluster: Cluster,
) -> None:
    """A worker that stops gracefully tells the server: it is no longer listed as alive
    right away, and the server never reports it as having missed its heartbeats."""
    worker, worker_id = await trio.to_thread.run_sync(
        cluster.start_worker, "tests.e2e.flows:main_worker"
    )
    async with cluster.client() as client:
        assert worker_id in [found.id for found in await client.list_workers()]
        assert await trio.to_thread.run_sync(worker.stop) == 0
        alive = [found.id for found in await client.list_workers()]
        gone = {found.id: found for found in await client.list_workers(include_gone=True)}
    assert worker_id not in alive
    assert gone[worker_id].alive is False
    assert f"worker {worker_id} missed its heartbeats" not in cluster.server.log.read_text()
