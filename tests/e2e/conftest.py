"""A cluster of real processes for the module: ``aiki server`` and two ``aiki worker``s."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import attrs
import psycopg
import pytest
import redis

from tests._processes import AikiProcess, start_aiki


@attrs.define
class Cluster:
    url: str
    database_url: str
    redis_url: str
    logs: Path
    server: AikiProcess
    workers: list[AikiProcess]

    def env(self) -> dict[str, str]:
        return {"AIKI_E2E_DATABASE_URL": self.database_url}

    def start_worker(self, target: str, grace: float = 5.0) -> tuple[AikiProcess, str]:
        """Start one more worker serving ``target``; return it and its worker ID."""
        worker = start_aiki(
            [
                "worker",
                target,
                "--server-url",
                self.url,
                "--redis-url",
                self.redis_url,
                "--shutdown-grace",
                str(grace),
            ],
            self.logs / f"worker-{uuid.uuid4().hex[:6]}.log",
            self.env(),
        )
        match = worker.wait_ready(r"aiki worker (\S+) serving")
        return worker, match.group(1)


@pytest.fixture(scope="module")
def e2e_database(database_url: str) -> Iterator[str]:
    """A schema for this module: the server's tables plus the side-effect tables."""
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            f"CREATE TABLE {schema}.e2e_effects (key text, task text, "
            "at timestamptz DEFAULT clock_timestamp())"
        )
        conn.execute(f"CREATE TABLE {schema}.e2e_gates (key text PRIMARY KEY)")
    separator = "&" if "?" in database_url else "?"
    yield f"{database_url}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def cluster(e2e_database: str, redis_url: str) -> Iterator[Cluster]:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("aiki:runs:e2e-*"):
        client.delete(key)
    logs = Path(tempfile.mkdtemp(prefix="aiki-e2e-"))
    env = {
        "AIKI_DATABASE_URL": e2e_database,
        "AIKI_REDIS_URL": redis_url,
        "AIKI_E2E_DATABASE_URL": e2e_database,
    }
    server = start_aiki(["server", "--port", "0"], logs / "server.log", env)
    processes = [server]
    try:
        url = server.wait_ready(r"listening on (\S+)").group(1)
        found = Cluster(url, e2e_database, redis_url, logs, server, [])
        for _ in range(2):
            worker, _ = found.start_worker("tests.e2e.flows:main_worker")
            found.workers.append(worker)
            processes.append(worker)
        yield found
        processes = [*found.workers, server]
    finally:
        for process in reversed(processes):
            process.stop()
