"""The benchmark suite runs from a clean checkout and writes its results (tiny sizes;
the figures themselves are not asserted: benchmarks are not timed tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._processes import ROOT


def test_the_suite_measures_every_workload_and_writes_its_results(tmp_path: Path) -> None:
    # A session of its own, so that on a timeout the whole tree (server, workers,
    # PostgreSQL, Redis) is killed, not only the benchmark process.
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "suite", "--n", "20", "--rounds", "1",
         "--unloaded", "4", "--no-peers", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"the suite did not finish in 240 s:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    results = json.loads((tmp_path / "suite.json").read_text())
    measured = {(s["system"], s["workload"], s["workers"]) for s in results["samples"]}
    assert measured == {
        ("aiki", "W1", 2), ("aiki", "W5", 2), ("aiki", "fan-out", 2), ("aiki", "event", 2),
        ("aiki", "W1 scaling", 1), ("aiki", "W1 scaling", 2), ("aiki", "W1 scaling", 4),
        ("aiki", "W1 unloaded", 2), ("aiki", "W5 unloaded", 2),
        ("aiki", "W1 trio task", 2), ("aiki", "W1 trio task unloaded", 2),
    }  # fmt: skip
    for sample in results["samples"]:
        assert sample["latencies_ms"], sample["workload"]
        if not sample["workload"].endswith("unloaded"):
            assert sample["seconds"] > 0
            assert sample["cost"]["pg_transactions"] > 0
            assert sample["cost"]["cpu_ms_server"] > 0
    table = (tmp_path / "suite.md").read_text()
    assert "| aiki | W1 | 2 |" in table
