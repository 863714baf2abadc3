"""The end-to-end tests' cluster of real processes (see `tests._cluster`)."""

from tests._cluster import Cluster as Cluster
from tests._cluster import cli as cli
from tests._cluster import cluster as cluster
from tests._cluster import e2e_database as e2e_database
from tests._cluster import ok_json as ok_json
