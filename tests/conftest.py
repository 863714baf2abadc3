"""Session-wide services for the test suite: real PostgreSQL and Redis.

``AIKI_TEST_DATABASE_URL`` and ``AIKI_TEST_REDIS_URL`` point at external instances;
otherwise the session starts its own with the project's launcher (the same code
``aiki dev`` uses) in a temporary directory, and stops them at the end. The tests that
need a Redis Cluster (`redis_cluster`) get a local 3-master one from the same launcher
(``LocalRedisCluster``), since they restart its nodes. A service that
cannot be had fails the session; nothing is skipped.

Tests isolate themselves by name, not by mocks: a fresh PostgreSQL schema per test
(`pg_url`) and unique Redis keys (`stream_key`).

Tiers: tests that start real server and worker processes (``tests/e2e``), the chaos
suite and the benchmarks' smoke test are marked ``slow``; ``pytest -m "not slow"`` is the
inner loop, and plain ``pytest`` (what CI runs) runs everything.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from transport.local_cluster import LocalRedisCluster
from transport.local_services import Services, services_from_env

SLOW_DIRECTORIES = ("e2e", "edge", "chaos", "benchmarks")
"""Test directories whose tests are all ``slow``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of `SLOW_DIRECTORIES` ``slow``."""
    tests = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests).parts
        if parts and parts[0] in SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Sync on purpose: pytest-trio fixtures must be test-scoped."""
    base = Path(tempfile.mkdtemp(prefix="aiki-tests-"))
    found = services_from_env(base, prefix="AIKI_TEST_", fsync=False, database="aiki_test")
    try:
        yield found
    finally:
        for service in (found.redis, found.postgres):
            if service is not None:
                service.remove()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A local 3-master Redis Cluster (the project's launcher), for the session."""
    base = Path(tempfile.mkdtemp(prefix="aiki-cluster-"))
    found = LocalRedisCluster(base, masters=3)
    try:
        yield found.start()
    finally:
        found.remove()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(services: Services) -> str:
    """URL of the test database."""
    return services.database_url


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    """URL of the test Redis."""
    return services.redis_url


@pytest.fixture
def pg_url(database_url: str) -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in database_url else "?"
    yield f"{database_url}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def stream_key() -> str:
    """A Redis key no other test uses."""
    return f"test:{uuid.uuid4().hex}"
