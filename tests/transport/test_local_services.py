"""The local services launcher: real servers, kill -9, restart on the same port and data,
Redis without persistence, binaries found or clearly reported missing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from transport import LocalServiceError
from transport.local_services import (
    LocalPostgres,
    LocalRedis,
    services_from_env,
    start_local_postgres,
    start_local_redis,
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A private temporary directory (0700, as tempfile makes them)."""
    path = Path(tempfile.mkdtemp(prefix="aiki-launcher-"))
    yield path
    for leftover in path.rglob("*"):  # clusters relocated for the service user
        if leftover.is_symlink() and leftover.resolve().is_dir():
            shutil.rmtree(leftover.resolve(), ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_postgres_survives_kill_9_and_restarts_on_the_same_port_and_data(scratch: Path) -> None:
    """Committed rows are still there after SIGKILL and a restart on the same data dir and port."""
    pg = start_local_postgres(scratch / "pg", fsync=False)
    try:
        port, first_pid = pg.port, pg.pid
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (value int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        pg.kill()
        assert not pg.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.url, connect_timeout=2)
        pg.start()
        assert (pg.port, pg.running) == (port, True)
        assert pg.pid != first_pid
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT value FROM kept").fetchall() == [(42,)]
    finally:
        pg.remove()


def test_a_killed_postgres_leaves_no_backend_behind_and_restarts_at_once(scratch: Path) -> None:
    """Backends leave the postmaster's process group (``setsid``): ``kill`` ends them too,
    so a restart right after never meets "pre-existing shared memory block is still in
    use" (which a busy backend outliving its postmaster caused)."""
    pg = start_local_postgres(scratch / "pg", fsync=False)
    try:
        busy = [psycopg.connect(pg.url, autocommit=True) for _ in range(4)]
        backends = [conn.info.backend_pid for conn in busy]
        for _ in range(3):
            pg.kill()
            for pid in backends:  # gone as kill returns, not a moment later
                stat = Path(f"/proc/{pid}/stat")
                assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
            pg.start()
            busy = [psycopg.connect(pg.url, autocommit=True) for _ in range(4)]
            backends = [conn.info.backend_pid for conn in busy]
    finally:
        pg.remove()


def test_postgres_runs_unprivileged_even_when_launched_as_root(scratch: Path) -> None:
    """PostgreSQL refuses root; as root the launcher runs it as the service user."""
    pg = start_local_postgres(scratch / "pg", fsync=False)
    try:
        assert pg.pid is not None
        uid = _uid_of(pg.pid)
        if os.geteuid() == 0:
            assert uid != 0
        else:
            assert uid == os.geteuid()
    finally:
        pg.remove()


def test_stop_leaves_no_server_process_behind(scratch: Path) -> None:
    """After stop(), the whole process group (postmaster and backends) is gone."""
    pg = start_local_postgres(scratch / "pg", fsync=False)
    with psycopg.connect(pg.url) as conn:  # a backend process exists now
        conn.execute("SELECT 1")
        pid = pg.pid
        assert pid is not None
    pg.stop()
    assert not _group_alive(pid)
    pg.remove()
    assert not (scratch / "pg").exists()


def test_redis_restart_without_persistence_loses_all_data(scratch: Path) -> None:
    """A non-persistent Redis comes back on the same port, empty (a failover that lost data)."""
    server = start_local_redis(scratch / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        client.xadd("stream", {"m": b"x"})
        port = server.port
        server.restart(kill=True)
        assert server.port == port
        assert redis.Redis.from_url(server.url).exists("stream") == 0
    finally:
        server.stop()


def test_persistent_redis_keeps_data_across_a_clean_restart(scratch: Path) -> None:
    """With persistence on, a clean restart keeps the data (AOF)."""
    server = LocalRedis(scratch / "redis", persistent=True).start()
    try:
        redis.Redis.from_url(server.url).set("k", "v")
        server.restart()
        assert redis.Redis.from_url(server.url).get("k") == b"v"
    finally:
        server.stop()


def test_a_configured_binary_that_does_not_exist_is_a_clear_error(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong AIKI_POSTGRES_BINDIR / AIKI_REDIS_SERVER is reported, not silently replaced."""
    monkeypatch.setenv("AIKI_POSTGRES_BINDIR", str(scratch / "nowhere"))
    with pytest.raises(LocalServiceError, match=r"AIKI_POSTGRES_BINDIR=.* has no postgres"):
        LocalPostgres(scratch / "pg").start()
    monkeypatch.setenv("AIKI_REDIS_SERVER", str(scratch / "nowhere" / "redis-server"))
    with pytest.raises(LocalServiceError, match=r"AIKI_REDIS_SERVER=.* is not an executable"):
        LocalRedis(scratch / "redis").start()


def test_a_server_that_cannot_start_reports_its_log(scratch: Path) -> None:
    """Startup failure raises LocalServiceError carrying the server's own complaint."""
    blocker = start_local_redis(scratch / "first")
    try:
        with pytest.raises(LocalServiceError, match="exited during startup"):
            LocalRedis(scratch / "second", port=blocker.port).start()  # port taken
    finally:
        blocker.stop()


def test_services_from_env_uses_external_urls_when_given(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str
) -> None:
    """With both URLs set, nothing is started and the URLs are passed through."""
    monkeypatch.setenv("AIKI_X_DATABASE_URL", database_url)
    monkeypatch.setenv("AIKI_X_REDIS_URL", redis_url)
    found = services_from_env(scratch, prefix="AIKI_X_")
    assert (found.database_url, found.redis_url) == (database_url, redis_url)
    assert found.postgres is None
    assert found.redis is None
    assert not any(scratch.iterdir())
