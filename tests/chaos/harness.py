"""The chaos harness: real processes, real faults, and the invariants checked afterwards.

Used by the chaos test (a few minutes, in CI) and by ``benchmarks/soak.py`` (as long as
you like). Everything runs on loopback: a PostgreSQL and a Redis of its own (so they can
be killed and restarted), one ``aiki server`` (or several, which the clients and workers
are all given) and three ``aiki worker`` processes with short recovery timeouts. Redis
is one server, or a 3-master Redis Cluster whose nodes are restarted one at a time.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import attrs
import psycopg
import trio

import aiki
from tests._holding import most_holding
from tests._processes import AikiProcess, make_keys, start_aiki
from transport.local_cluster import LocalRedisCluster
from transport.local_services import (
    LocalPostgres,
    LocalRedis,
    start_local_postgres,
    start_local_redis,
)

from . import flows

CLAIM_TIMEOUT = 2.0
SERVER_ARGS = [
    "--claim-timeout",
    str(CLAIM_TIMEOUT),
    "--redelivery-timeout",
    "5",
    "--timer-scan",
    "1",
]
WORKER_ARGS = ["--heartbeat", "0.3", "--claim-idle", "2", "--shutdown-grace", "3"]
TARGET = "tests.chaos.flows:worker"
KINDS = tuple(flows.EXPECTED)


@attrs.define
class Report:
    """What the checks found."""

    runs: int
    faults: list[str]
    lost: int
    not_as_expected: list[tuple[str, str, object]]
    duplicated_completions: int
    reexecuted_recorded_tasks: int
    inflight_reexecutions: int
    reexecuted_examples: list[str] = attrs.Factory(list)
    over_limit: int = 0
    """Limited runs holding a slot past a limit at once, at the worst moment (over all
    keys of both limits; 0: never)."""
    limited: int = 0
    """Runs started under limits (and priorities)."""

    def lines(self) -> list[str]:
        """The summary the chaos suite prints."""
        return [
            f"runs: {self.runs}",
            f"faults injected: {len(self.faults)} ("
            + ", ".join(f"{kind} x{n}" for kind, n in Counter(self.faults).items())
            + ")",
            f"lost: {self.lost}",
            f"duplicated completions: {self.duplicated_completions}",
            f"re-executed recorded tasks: {self.reexecuted_recorded_tasks}"
            + (f" ({', '.join(self.reexecuted_examples)})" if self.reexecuted_examples else ""),
            f"in-flight re-executions: {self.inflight_reexecutions}",
            f"runs under limits and priorities: {self.limited}, over-limit: {self.over_limit}",
            f"not as expected: {len(self.not_as_expected)}",
            *(f"  {key}: {status} ({detail})" for key, status, detail in self.not_as_expected[:10]),
        ]

    @property
    def clean(self) -> bool:
        """True when every invariant holds."""
        return not (
            self.lost
            or self.not_as_expected
            or self.duplicated_completions
            or self.reexecuted_recorded_tasks
            or self.over_limit
        )


@attrs.define
class Chaos:
    """A cluster under test, its faults, and its load."""

    base: Path
    postgres: LocalPostgres
    redis: LocalRedis | LocalRedisCluster
    servers: list[AikiProcess] = attrs.Factory(list)
    urls: list[str] = attrs.Factory(list)
    workers: list[AikiProcess] = attrs.Factory(list)
    faults: list[str] = attrs.Factory(list)
    keys: list[str] = attrs.Factory(list)
    api_keys: dict[str, str] = attrs.Factory(dict)
    """A key of each role: the workers act with the worker key, the load with the client's."""
    rng: random.Random = attrs.Factory(lambda: random.Random(7))
    limited: bool = False
    """Every other run is started under limits, with a priority (0..4 in turn)."""

    @property
    def url(self) -> str:
        """What clients and workers are given: every server's URL."""
        return ",".join(self.urls)

    @classmethod
    def start(
        cls, workers: int = 3, seed: int = 7, *, servers: int = 1, redis_cluster: bool = False,
        limited: bool = False,
    ) -> Chaos:  # fmt: skip
        """Start PostgreSQL, Redis (a 3-master cluster if ``redis_cluster``), ``servers``
        servers and the workers (``seed`` picks victims); with ``limited``, every other
        run of the load goes under limits, with a priority."""
        base = Path(tempfile.mkdtemp(prefix="aiki-chaos-"))
        postgres = start_local_postgres(base / "postgres", fsync=True)
        redis: LocalRedis | LocalRedisCluster = (
            LocalRedisCluster(base / "redis").start()
            if redis_cluster
            else start_local_redis(base / "redis")
        )
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE chaos_effects (key text, label text,"
                " at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            conn.execute("CREATE INDEX ON chaos_effects (key, label)")
        chaos = cls(base, postgres, redis, rng=random.Random(seed), limited=limited)
        for index in range(servers):
            chaos._start_server(port=0, index=index)
        chaos.api_keys = make_keys(postgres.url, chaos.url)
        for _ in range(workers):
            chaos.workers.append(chaos._start_worker())
        return chaos

    def _env(self) -> dict[str, str]:
        return {
            "AIKI_DATABASE_URL": self.postgres.url,
            "AIKI_REDIS_URL": self.redis.url,
            "AIKI_CHAOS_DATABASE_URL": self.postgres.url,
        }

    def _start_server(self, port: int, index: int) -> None:
        shards = ["--stream-shards", "4"] if isinstance(self.redis, LocalRedisCluster) else []
        server = start_aiki(
            ["server", "--port", str(port), *SERVER_ARGS, *shards],
            self.base / f"server-{uuid.uuid4().hex[:4]}.log",
            self._env(),
        )
        url = server.wait_ready(r"listening on (\S+)").group(1)
        if index == len(self.servers):
            self.servers.append(server)
            self.urls.append(url)
        self.servers[index], self.urls[index] = server, url

    def _start_worker(self) -> AikiProcess:
        worker = start_aiki(
            ["worker", TARGET, "--server-url", self.url, *WORKER_ARGS],
            self.base / f"worker-{uuid.uuid4().hex[:4]}.log",
            {**self._env(), "AIKI_API_KEY": self.api_keys["worker"]},
        )
        worker.wait_ready(r"aiki worker \S+ serving")
        return worker

    def stop(self) -> None:
        """Stop everything and remove the data."""
        for process in [*self.workers, *self.servers]:
            if process.process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # in case a freeze was interrupted
            process.stop(10)
        self.redis.remove()
        self.postgres.remove()
        if os.environ.get("AIKI_CHAOS_KEEP_LOGS"):
            print(f"chaos logs kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- faults (blocking: run them in a thread) ------------------------------------------------

    def kill_worker_mid_task(self) -> None:
        """SIGKILL a worker while it holds runs, then start a replacement."""
        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            busy = {
                str(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT worker_id FROM aiki_runs WHERE status = 'running'"
                )
            }
        victims = [w for w in self.workers if any(b in w.ready_line for b in busy)]
        victim = victims[0] if victims else self.rng.choice(self.workers)
        victim.kill()
        self.workers.remove(victim)
        self.workers.append(self._start_worker())
        self.faults.append("worker SIGKILL")

    def restart_server(self) -> None:
        """SIGKILL a server and start it again on the same port (with several, its
        sessions move to the others meanwhile)."""
        index = self.rng.randrange(len(self.servers))
        port = int(self.urls[index].rsplit(":", 1)[1])
        self.servers[index].kill()
        self._start_server(port, index)
        self.faults.append("server SIGKILL+restart")

    def restart_redis(self) -> None:
        """Restart Redis without persistence: every stream and group is gone (on a
        cluster: one node's, which comes back owning its slots, empty)."""
        if isinstance(self.redis, LocalRedisCluster):
            self.redis.restart_node(self.rng.randrange(len(self.redis.nodes)))
            self.faults.append("redis cluster node restart (data lost)")
            return
        self.redis.restart(kill=True)
        self.faults.append("redis restart (data lost)")

    def restart_postgres(self) -> None:
        """SIGKILL PostgreSQL and start it again (crash recovery)."""
        self.postgres.restart(kill=True)
        self.faults.append("postgres SIGKILL+restart")

    def freeze_worker(self) -> None:
        """SIGSTOP a worker until the server declares it dead (past the claim timeout) and
        has released its runs, then SIGCONT it: a zombie whose late writes must be refused."""
        victim = self.rng.choice(self.workers)
        worker_id = victim.ready_line.split()[2]
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10 * CLAIM_TIMEOUT
            while time.monotonic() < deadline:
                rows = self._query("SELECT alive FROM aiki_workers WHERE id = %s", (worker_id,))
                if rows and rows[0][0] is False:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"frozen worker {worker_id} was never declared dead")
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        self.faults.append("worker SIGSTOP past the claim timeout")

    # -- load -----------------------------------------------------------------------------------

    async def load(self, count: int, per_second: float) -> None:
        """Start ``count`` runs at ``per_second`` (retrying through outages) and send events."""
        limit = trio.Semaphore(32)
        async with (
            aiki.Client(self.url, api_key=self.api_keys["client"]) as client,
            trio.open_nursery() as nursery,
        ):
            for index in range(count):
                key = f"{KINDS[index % len(KINDS)]}-{index}"
                self.keys.append(key)
                nursery.start_soon(self._start_one, client, key, limit,
                                   self.limited and index % 2 == 0)  # fmt: skip
                await trio.sleep(1 / per_second)

    async def _start_one(
        self, client: aiki.Client, key: str, limit: trio.Semaphore, limited: bool
    ) -> None:
        index = int(key.rsplit("-", 1)[1])
        async with limit:
            # Servers restart on their ports, so one client serves throughout.
            if limited:
                job = flows.Grouped(key=key, group=index % 7)
                version = flows.limited_flow.with_(reference_id=key, priority=index % 5)
                handle = await _retry(lambda: version.start(client, job))
            else:
                handle = await _retry(
                    lambda: flows.chaos_flow.with_(reference_id=key).start(client, key)
                )
            if key.startswith("event"):
                await _retry(lambda: handle.events.go.send(flows.Go("chaos"), reference_id=key))

    async def wait_until_settled(self, seconds: float) -> int:
        """Wait until every started run is terminal; return how many are not (0 = settled)."""
        deadline = trio.current_time() + seconds
        open_runs = len(self.keys)
        while trio.current_time() < deadline:
            rows = await trio.to_thread.run_sync(
                self._query,
                "SELECT count(*) FROM aiki_runs WHERE status NOT IN"
                " ('completed', 'failed', 'cancelled')",
                (),
            )
            started = await trio.to_thread.run_sync(
                self._query, "SELECT count(*) FROM aiki_runs", ()
            )
            open_runs = int(rows[0][0]) + (len(self.keys) - int(started[0][0]))
            if open_runs == 0:
                return 0
            await trio.sleep(0.5)
        return open_runs

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    # -- the invariants -------------------------------------------------------------------------

    def check(self) -> Report:
        """Compare what the database recorded with what should have happened."""
        q = self._query
        runs = {
            str(key): (str(status), output, error)
            for key, status, output, error in q(
                "SELECT r.reference_id, r.status, r.output, concat_ws(' | ', r.error::text,"
                " (SELECT string_agg(concat_ws(' ', t.from_status, t.to_status, t.reason,"
                " t.worker_id), ', ' ORDER BY t.id) FROM aiki_transitions t"
                " WHERE t.run_id = r.id)) FROM aiki_runs r",
                (),
            )
        }
        lost = sum(1 for key in self.keys if key not in runs)
        wrong = [
            (key, status, error or output)
            for key, (status, output, error) in runs.items()
            if (status, output) != ("completed", flows.EXPECTED[key.split("-")[0]])
        ]
        duplicated = q(
            "SELECT count(*) FROM (SELECT run_id FROM aiki_transitions"
            " WHERE to_status = 'completed' GROUP BY run_id HAVING count(*) > 1) d",
            (),
        )
        reexecuted = q(
            """
            SELECT e.key, e.label FROM chaos_effects e
            JOIN aiki_runs r ON r.reference_id = e.key
            JOIN aiki_tasks t ON t.run_id = r.id AND t.input ->> 'label' = e.label
            WHERE t.state = 'completed' AND e.at > t.updated_at""",
            (),
        )
        inflight = q(
            """
            SELECT COALESCE(sum(GREATEST(0, effects.n - t.attempts)), 0)
            FROM (SELECT key, label, count(*) AS n FROM chaos_effects GROUP BY key, label) effects
            JOIN aiki_runs r ON r.reference_id = effects.key
            JOIN aiki_tasks t ON t.run_id = r.id AND t.input ->> 'label' = effects.label""",
            (),
        )
        over_limit, limited = self._over_limit()
        return Report(
            over_limit=over_limit,
            limited=limited,
            runs=len(runs),
            faults=list(self.faults),
            lost=lost,
            not_as_expected=wrong,
            duplicated_completions=int(duplicated[0][0]),
            reexecuted_recorded_tasks=len(reexecuted),
            reexecuted_examples=[f"{key}/{label}" for key, label in reexecuted[:10]],
            inflight_reexecutions=int(inflight[0][0]),
        )

    def _over_limit(self) -> tuple[int, int]:
        """How far past its limits the limited load went at its worst (from the history),
        and how many limited runs there were."""
        groups = {
            str(run_id): str(group)
            for run_id, group in self._query(
                "SELECT run_id::text, key FROM aiki_run_slots WHERE name = %s",
                (flows.PER_GROUP.name,),
            )
        }
        if not groups:
            return 0, 0
        history = [
            (str(run_id), str(to_status), str(reason))
            for run_id, to_status, reason in self._query(
                "SELECT t.run_id::text, t.to_status, t.reason FROM aiki_transitions t"
                " JOIN aiki_run_slots s ON s.run_id = t.run_id AND s.name = %s ORDER BY t.id",
                (flows.PER_GROUP.name,),
            )
        ]
        per_group, total = most_holding(history, groups)
        over = max(0, total - flows.SHARED.per_key) + sum(
            max(0, most - flows.PER_GROUP.per_key) for most in per_group.values()
        )
        return over, len(groups)


async def _retry(call: object) -> object:
    """Repeat ``call`` through outages (idempotent: every start and event has a reference)."""
    delay = 0.1
    while True:
        try:
            return await call()  # type: ignore[operator]
        except aiki.UnavailableError:
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)
