"""The edge tests' server and workers: real processes (see `tests._cluster`)."""

from tests._cluster import Cluster as Cluster
from tests._cluster import cluster as cluster
from tests._cluster import e2e_database as e2e_database
