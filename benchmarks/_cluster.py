"""An Aiki cluster for benchmarks: PostgreSQL (fsync on) and Redis, one ``aiki server``
and a number of ``aiki worker`` processes that can be changed between measurements.

The server runs as deployed, with authentication: the cluster makes a key of each role
(`tests._processes.make_keys`); the workers act with the worker key, and this process
with the client key (``AIKI_API_KEY``, which `aiki.Client` reads). ``auth=False`` runs
the server with ``--insecure-no-auth`` instead (to measure what the key checks cost).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import attrs

from tests._processes import AikiProcess, make_keys, start_aiki
from transport.local_services import Services, services_from_env

from ._meters import Meters

PASSED = ("AIKI_STREAM_SHARDS", "AIKI_DISPATCH_AHEAD")
"""Server settings this process's environment passes on to the cluster (for A/B runs)."""


@attrs.define
class AikiCluster:
    """Services, server and workers; `stop` removes everything it started."""

    base: Path
    services: Services
    target: str
    server: AikiProcess | None = None
    workers: list[AikiProcess] = attrs.Factory(list)
    url: str = ""
    keys: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def start(
        cls, target: str, workers: int, *, auth: bool = True, server_processes: int = 1
    ) -> AikiCluster:
        """Start the services (unless ``AIKI_DATABASE_URL``/``AIKI_REDIS_URL`` are set), the
        server (``server_processes`` processes on one port), and ``workers`` worker
        processes serving ``target``."""
        base = Path(tempfile.mkdtemp(prefix="aiki-bench-"))
        cluster = cls(base, services_from_env(base, fsync=True), target)
        try:
            insecure = [] if auth else ["--insecure-no-auth"]
            processes = ["--processes", str(server_processes)]
            cluster.server = start_aiki(
                ["server", "--port", "0", *processes, *insecure], base / "server.log",
                cluster.env(),
            )  # fmt: skip
            cluster.url = cluster.server.wait_ready(r"listening on (\S+)").group(1)
            if auth:
                cluster.keys = make_keys(cluster.services.database_url, cluster.url)
                os.environ["AIKI_API_KEY"] = cluster.keys["client"]
            else:
                os.environ.pop("AIKI_API_KEY", None)
            cluster.scale(workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def env(self) -> dict[str, str]:
        """The environment of the cluster's processes."""
        passed = {name: os.environ[name] for name in PASSED if os.environ.get(name)}
        return {
            "AIKI_DATABASE_URL": self.services.database_url,
            "AIKI_REDIS_URL": self.services.redis_url,
            **passed,
        }

    def scale(self, count: int) -> None:
        """Start or stop workers until ``count`` run."""
        while len(self.workers) < count:
            worker = start_aiki(
                ["worker", self.target, "--server-url", self.url],
                self.base / f"worker{len(self.workers)}.log",
                {**self.env(), **({"AIKI_API_KEY": self.keys["worker"]} if self.keys else {})},
            )
            worker.wait_ready(r"aiki worker \S+ serving")
            self.workers.append(worker)
        while len(self.workers) > count:
            self.workers.pop().stop()

    def roles(self, **others: list[int]) -> dict[str, list[int]]:
        """The pids of each role now (PostgreSQL and Redis only when started here)."""
        roles = {
            "server": [self.server.pid] if self.server else [],
            "workers": [worker.pid for worker in self.workers],
            "client": [os.getpid()],
        }
        if self.services.postgres is not None and self.services.postgres.pid is not None:
            roles["postgres"] = [self.services.postgres.pid]
        if self.services.redis is not None and self.services.redis.pid is not None:
            roles["redis"] = [self.services.redis.pid]
        return roles | others

    def meters(self, **others: list[int]) -> Meters:
        """Counters over the cluster (plus ``others``: a peer's processes, say)."""
        return Meters(
            self.services.database_url, self.services.redis_url, lambda: self.roles(**others)
        )

    def stop(self) -> None:
        """Stop the processes and the services; keep the logs if AIKI_BENCH_KEEP_LOGS is set."""
        for process in [*reversed(self.workers), self.server]:
            if process is not None:
                process.stop()
        for service in (self.services.redis, self.services.postgres):
            if service is not None:
                service.remove()
        if os.environ.get("AIKI_BENCH_KEEP_LOGS"):
            print(f"logs kept in {self.base}", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
