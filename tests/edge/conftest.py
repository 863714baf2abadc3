"""The edge tests' server and workers (real processes, see `tests._cluster`), and the lines
the robustness suite adds to the terminal summary."""

from __future__ import annotations

import pytest

from tests._cluster import Cluster as Cluster
from tests._cluster import cluster as cluster
from tests._cluster import e2e_database as e2e_database

EDGE_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def edge_lines(request: pytest.FixtureRequest) -> list[str]:
    """Lines to print in the terminal summary (``edge: requests N, 5xx 0, ...``)."""
    return request.config.stash.setdefault(EDGE_LINES, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the robustness suite's line, whatever the verbosity or capture."""
    for line in terminalreporter.config.stash.get(EDGE_LINES, []):
        terminalreporter.write_line(line)
