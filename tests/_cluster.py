"""A cluster of real processes for a test module: ``aiki server`` and two ``aiki worker``s.

Two topologies (a module lists those it runs on in ``TOPOLOGIES``; the default is the
first): `ONE_SERVER`, one server on the session's Redis; and `THREE_SERVERS`, three
servers on a local 3-master Redis Cluster with every queue in four sub-streams, whose
clients, workers and CLI are given all three URLs (each picks one, and moves on when it
goes away).

The server runs as it does by default, with authentication: the fixture makes the first
admin key with ``aiki keys create --bootstrap`` and, with it, a worker key (the workers'
``AIKI_API_KEY``), a client key and a viewer key (`Cluster.keys`; `Cluster.client` acts
with the client key). The fixtures are used by ``tests/e2e`` and ``tests/edge`` (each
conftest imports them).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import attrs
import orjson
import psycopg
import pytest
import redis
import redis.cluster
import trio

import aiki
from tests._processes import AikiProcess, make_keys, start_aiki, start_bootstrap, stop_all
from tests._tls import Certificates, make_certificates

ONE_SERVER = "one-server"
THREE_SERVERS = "three-servers-redis-cluster"


@attrs.define
class Cluster:
    url: str
    """The first server's URL (for plain HTTP requests to one server)."""
    database_url: str
    redis_url: str
    logs: Path
    server: AikiProcess
    """The first server."""
    workers: list[AikiProcess]
    server_args: list[str] = attrs.Factory(list)
    worker_args: list[str] = attrs.Factory(list)
    servers: list[AikiProcess] = attrs.Factory(list)
    """Every server, the first one first."""
    urls: list[str] = attrs.Factory(list)
    """Every server's URL, in the order of `servers`."""
    keys: dict[str, str] = attrs.Factory(dict)
    """An API key by role (namespace ``default``; the admin key: every namespace)."""
    tls: Certificates | None = None
    """The server serves HTTPS with these (and everyone trusts their CA)."""
    client_certs: dict[str, tuple[str, str]] = attrs.Factory(dict)
    """Mutual TLS: a client certificate and key by role (``none``: one that names no role,
    for processes that act with a key), which every process presents."""

    def env(self, role: str = "worker") -> dict[str, str]:
        """The environment of a process acting with the key of ``role``."""
        found = {"AIKI_E2E_DATABASE_URL": self.database_url}
        if role in self.keys:
            found["AIKI_API_KEY"] = self.keys[role]
        if self.tls is not None:
            found["AIKI_CA_FILE"] = self.tls.ca_file
        if self.client_certs:
            found["AIKI_CLIENT_CERT"], found["AIKI_CLIENT_KEY"] = self.client_certs.get(
                role, self.client_certs["none"]
            )
        return found

    def headers(self, role: str = "viewer") -> dict[str, str]:
        """HTTP headers presenting the key of ``role``."""
        return {"authorization": f"Bearer {self.keys[role]}"}

    @property
    def server_urls(self) -> str:
        """What clients, workers and the CLI are given: every server's URL."""
        return ",".join(self.urls)

    def client(self, role: str = "client", **options: typing.Any) -> aiki.Client:
        """A client of the servers acting with the key of ``role``."""
        ca_file = None if self.tls is None else self.tls.ca_file
        cert, key = self.client_certs.get(role, self.client_certs.get("none", (None, None)))
        return aiki.Client(self.server_urls, api_key=self.keys.get(role), ca_file=ca_file,
                           client_cert=cert, client_key=key, **options)  # fmt: skip

    def start_server(self, port: int, index: int = 0) -> None:
        """Start server ``index`` (on ``port``; 0 picks one) and wait until it listens."""
        self.start_servers([port], first=index)

    def start_servers(self, ports: list[int], first: int = 0) -> None:
        """Start servers ``first``, ``first + 1``, ... (each on its port; 0 picks one) at
        once, and wait until each listens."""
        spawned = [self.spawn_server(port) for port in ports]
        for index, process in enumerate(spawned, start=first):
            url = process.wait_ready(r"listening on (\S+)").group(1)
            if index == len(self.servers):
                self.servers.append(process)
                self.urls.append(url)
            self.servers[index], self.urls[index] = process, url
        self.server, self.url = self.servers[0], self.urls[0]

    def kill_servers(self) -> list[int]:
        """SIGKILL every server; return their ports (for `start_servers`)."""
        ports = [int(url.rsplit(":", 1)[1]) for url in self.urls]
        for process in self.servers:
            process.kill()
        return ports

    def spawn_server(self, port: int) -> AikiProcess:
        """Start one more server process on the cluster's PostgreSQL and Redis."""
        env = {"AIKI_DATABASE_URL": self.database_url, "AIKI_REDIS_URL": self.redis_url,
               **self.env(role="none")}  # fmt: skip
        return start_aiki(
            ["server", "--port", str(port), *self.server_args],
            self.logs / f"server-{uuid.uuid4().hex[:6]}.log", env,
        )  # fmt: skip

    def spawn_worker(self, target: str, server_url: str, grace: float = 5.0) -> AikiProcess:
        """Start one more worker serving ``target`` from ``server_url`` (not waiting)."""
        return start_aiki(
            ["worker", target, "--server-url", server_url, "--redis-url", self.redis_url,
             "--shutdown-grace", str(grace), *self.worker_args],
            self.logs / f"worker-{uuid.uuid4().hex[:6]}.log", self.env(),
        )  # fmt: skip

    def restart_server(self) -> None:
        """SIGKILL the first server and start a new one on the same port."""
        port = int(self.url.rsplit(":", 1)[1])
        self.server.kill()
        self.start_server(port)

    def start_worker(self, target: str, grace: float = 5.0) -> tuple[AikiProcess, str]:
        """Start one more worker serving ``target``; return it and its worker ID."""
        worker = self.spawn_worker(target, self.server_urls, grace)
        match = worker.wait_ready(r"aiki worker (\S+) serving")
        return worker, match.group(1)


@pytest.fixture(scope="module")
def e2e_database(database_url: str) -> Iterator[str]:
    """A schema for this module: the server's tables plus the side-effect tables."""
    with e2e_schema(database_url) as url:
        yield url


@contextlib.contextmanager
def e2e_schema(database_url: str) -> Iterator[str]:
    """A fresh schema (dropped afterwards) with the side-effect tables; its URL."""
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
def cluster(request: pytest.FixtureRequest, database_url: str) -> Iterator[Cluster]:
    """Servers and two workers, in the topology of ``request.param`` (default:
    `ONE_SERVER`); a test module may set ``WORKER_TARGET``, ``SERVER_ARGS``, ``WORKER_ARGS``,
    ``TLS`` (True: the server serves HTTPS with a test CA's certificate), ``MTLS`` (True,
    with ``TLS``: it asks every client for a certificate that CA signed) and
    ``KEYS_AFTER_START`` (True: no key exists when the servers start)."""
    topology = getattr(request, "param", ONE_SERVER)
    target = getattr(request.module, "WORKER_TARGET", "tests.e2e.flows:main_worker")
    server_args = list(getattr(request.module, "SERVER_ARGS", []))
    servers = 1
    if topology == THREE_SERVERS:
        redis_url = request.getfixturevalue("redis_cluster").url
        server_args += ["--stream-shards", "4"]
        servers = 3
        client: redis.Redis = redis.cluster.RedisCluster.from_url(
            redis_url.replace("redis+cluster://", "redis://").split(",")[0]
        )
    else:
        redis_url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(redis_url)
    for pattern in ("aiki:runs:*/e2e-*", "aiki:runs:*/w-*"):
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.close()
    with e2e_schema(database_url) as e2e_database:
        yield from _cluster(request, e2e_database, target, redis_url, server_args, servers)


def _cluster(
    request: pytest.FixtureRequest, e2e_database: str, target: str, redis_url: str,
    server_args: list[str], servers: int,
) -> Iterator[Cluster]:  # fmt: skip
    """The processes of a `cluster` on its own schema (``e2e_database``)."""
    logs = Path(tempfile.mkdtemp(prefix="aiki-e2e-"))
    found = Cluster("", e2e_database, redis_url, logs, None, [], server_args,  # type: ignore[arg-type]
                    list(getattr(request.module, "WORKER_ARGS", [])))  # fmt: skip
    if getattr(request.module, "TLS", False):
        found.tls = make_certificates(logs / "tls")
        found.server_args += ["--tls-cert", found.tls.cert_file, "--tls-key", found.tls.key_file]
        if getattr(request.module, "MTLS", False):
            found.server_args += ["--tls-client-ca", found.tls.ca_file]
            found.client_certs = {role: found.tls.client(f"cluster-{role}", role) for role in
                                  ("viewer", "client", "worker", "admin")}  # fmt: skip
            found.client_certs["none"] = found.tls.client("cluster-none")
    try:
        # The first admin key is made while the servers start, unless the module checks
        # what a server that finds none at start says (``KEYS_AFTER_START``).
        after = getattr(request.module, "KEYS_AFTER_START", False)
        admin = None if after else start_bootstrap(e2e_database)
        found.start_servers([0] * servers)
        found.keys = make_keys(e2e_database, found.url, found.env(role="none"), admin)
        found.workers = [found.spawn_worker(target, found.server_urls) for _ in range(2)]
        for worker in found.workers:
            worker.wait_ready(r"aiki worker (\S+) serving")
        yield found
    finally:
        stop_all(found.workers)  # (first: they say goodbye to their servers)
        stop_all(found.servers)


async def cli(
    cluster: Cluster, *args: str, role: str = "client", key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aiki <args>`` against the cluster (in a thread: trio keeps going),
    acting with ``key``, or else the cluster's key of ``role``."""
    env = {**os.environ, "AIKI_SERVER_URL": cluster.server_urls,
           "AIKI_API_KEY": key or cluster.keys[role]}  # fmt: skip
    return await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "aiki", *args], capture_output=True, text=True, env=env,
        timeout=60, check=False,
    ))  # fmt: skip


def ok_json(result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)
