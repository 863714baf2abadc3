"""The end-to-end tests' cluster of real processes (see `tests._cluster`).

A module that sets ``TOPOLOGIES`` runs every test once per topology named there (the
cluster fixture is set up once per module and topology).
"""

import pytest

from tests._cluster import ONE_SERVER as ONE_SERVER
from tests._cluster import THREE_SERVERS as THREE_SERVERS
from tests._cluster import Cluster as Cluster
from tests._cluster import cli as cli
from tests._cluster import cluster as cluster
from tests._cluster import e2e_database as e2e_database
from tests._cluster import ok_json as ok_json


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the ``cluster`` fixture with the module's ``TOPOLOGIES``."""
    topologies = getattr(metafunc.module, "TOPOLOGIES", None)
    if topologies and "cluster" in metafunc.fixturenames:
        metafunc.parametrize("cluster", topologies, indirect=True, scope="module")
