"""The ``aiki`` command line, run as real processes against the test services."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import redis

from tests._processes import start_aiki
from transport.local_services import LocalPostgres

AIKI = [sys.executable, "-m", "aiki"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    env.update(extra)
    return env


def test_version_and_help() -> None:
    """``aiki --version`` and ``aiki --help`` work and list the commands."""
    version = subprocess.run([*AIKI, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("aiki, version ")
    usage = subprocess.run([*AIKI, "--help"], capture_output=True, text=True, check=True)
    commands = re.findall(r"^  (\w+) ", usage.stdout, flags=re.M)
    assert {"dev", "server", "worker", "services", "runs", "schedules"} <= set(commands)


def test_services_runs_servers_until_interrupted(tmp_path: Path) -> None:
    """``aiki services`` prints working URLs under the names the server, the worker and
    the tests read (``aiki server`` starts with them and no option), and SIGINT stops
    both servers."""
    process = subprocess.Popen(
        [*AIKI, "services", "--data-dir", str(tmp_path / "svc")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        urls = {}
        for _ in range(4):
            line = process.stdout.readline()
            match = re.fullmatch(r"export (AIKI_\w+)=(\S+)\n", line)
            assert match, line
            urls[match.group(1)] = match.group(2)
        assert set(urls) == {"AIKI_DATABASE_URL", "AIKI_REDIS_URL", "AIKI_TEST_DATABASE_URL",
                             "AIKI_TEST_REDIS_URL"}  # fmt: skip
        with psycopg.connect(urls["AIKI_TEST_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(urls["AIKI_TEST_REDIS_URL"]).ping()
        server = start_aiki(["server", "--port", "0", "--insecure-no-auth"],
                            tmp_path / "server.log", urls)  # fmt: skip
        try:
            server.wait_ready(r"listening on (\S+)")
        finally:
            assert server.stop() == 0
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "killing it" not in stderr, "servers must stop on their stop signal, not by SIGKILL"
    LocalPostgres(tmp_path / "svc" / "postgres").remove()  # with a cluster relocated for root
    with_timeout = redis.Redis.from_url(urls["AIKI_TEST_REDIS_URL"], socket_connect_timeout=1)
    try:
        with_timeout.ping()
        raise AssertionError("redis still answers after aiki services stopped")
    except redis.ConnectionError:
        pass


def test_a_worker_target_typo_is_named_with_what_was_meant() -> None:
    """``module:wroker``: the attribute that does not exist, and the Worker it may mean
    (not "is NoneType, not an aiki.Worker")."""
    env = {**os.environ, "AIKI_REDIS_URL": "redis://127.0.0.1:9"}
    result = subprocess.run([*AIKI, "worker", "examples.orders:wroker"], capture_output=True,
                            text=True, env=env)  # fmt: skip
    assert result.returncode == 2
    assert "module 'examples.orders' has no attribute 'wroker'" in result.stderr
    assert "did you mean examples.orders:worker?" in result.stderr


def test_an_unknown_log_format_is_a_usage_error() -> None:
    env = {**os.environ, "AIKI_LOG_FORMAT": "xml", "AIKI_DATABASE_URL": "postgresql://x/y",
           "AIKI_REDIS_URL": "redis://x"}  # fmt: skip
    result = subprocess.run([*AIKI, "server"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "AIKI_LOG_FORMAT must be 'text' or 'json'" in result.stderr


def test_a_server_without_authentication_is_refused_beyond_loopback() -> None:
    """``--insecure-no-auth`` on an address that is not loopback: a usage error naming the
    risk, before anything listens."""
    refused = subprocess.run(
        [*AIKI, "server", "--host", "0.0.0.0", "--insecure-no-auth"],
        env=_env(AIKI_DATABASE_URL="postgresql://nowhere/none", AIKI_REDIS_URL="redis://nowhere"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "not a loopback address" in refused.stderr
    assert "every role" in refused.stderr


def test_bad_server_and_redis_urls_are_usage_errors_naming_what_is_wrong() -> None:
    """A server list with something that is not an http(s) URL, a cluster node without a
    port, a cluster URL with a database: refused before anything connects, by name."""
    runs = subprocess.run([*AIKI, "runs", "list"], capture_output=True, text=True, timeout=60,
                          env=_env(AIKI_SERVER_URL="http://a:8470,ftp://b"))  # fmt: skip
    assert runs.returncode == 2, runs.stderr
    assert "--server-url" in runs.stderr
    assert "'ftp://b': must be http://host:port" in runs.stderr
    worker = subprocess.run(
        [*AIKI, "worker", "examples.orders:worker"], capture_output=True, text=True, timeout=60,
        env=_env(AIKI_REDIS_URL="redis+cluster://u:secret@h1:7000,h2"),
    )  # fmt: skip
    assert worker.returncode == 2, worker.stderr
    assert "cluster node 'h2' must be host:port" in worker.stderr
    assert "secret" not in worker.stderr
    server = subprocess.run(
        [*AIKI, "server"], capture_output=True, text=True, timeout=60,
        env=_env(AIKI_DATABASE_URL="postgresql://x/y", AIKI_REDIS_URL="redis+cluster://h:1/4"),
    )  # fmt: skip
    assert server.returncode == 2, server.stderr
    assert "a Redis Cluster has database 0 only" in server.stderr
