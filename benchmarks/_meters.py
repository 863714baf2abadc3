"""What a workload costs: CPU seconds per process role, PostgreSQL transactions, Redis
commands. Read before and after a measurement; the difference divided by the number of
workflows is the cost per workflow."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import psycopg
import redis

from transport.redis_streams import parse_redis_url

_TICKS = os.sysconf("SC_CLK_TCK")
STATS_FLUSH_SECONDS = 1.1
"""PostgreSQL flushes a backend's transaction counts at most once a second."""


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds so far)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def cpu_by_role(roles: Mapping[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes and their descendants (the
    PostgreSQL postmaster's backends, say), except descendants that are another role's
    own (the benchmark process starts the servers, but its role is the client).
    Processes that ended are not counted: keep a measurement's processes alive until read."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    owned = {pid for roots in roles.values() for pid in roots}
    totals = {}
    for role, roots in roles.items():
        seen: set[int] = set()
        stack = [pid for pid in roots if pid in table]
        while stack:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                stack.extend(child for child in children.get(pid, []) if child not in owned)
        totals[role] = sum(table[pid][1] for pid in seen)
    return totals


@attrs.frozen
class Reading:
    """Counters at one moment."""

    at: float
    cpu: dict[str, float]
    transactions: int
    redis_commands: int


@attrs.define
class Meters:
    """Reads the counters of one cluster; ``roles`` names the pids of each role now."""

    database_url: str
    redis_url: str
    roles: Callable[[], dict[str, list[int]]]

    def read(self) -> Reading:
        """Read every counter (call it after `settle`, so PostgreSQL's stats are current)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
        commands = 0
        target = parse_redis_url(self.redis_url)
        for host, port in target.seeds:  # (a cluster: name every node as a seed)
            client = redis.Redis.from_url(target.node_url(host, port))
            try:
                commands += int(client.info("stats")["total_commands_processed"])
            finally:
                client.close()
        return Reading(
            time.perf_counter(), cpu_by_role(self.roles()), int(row[0]) if row else 0, commands
        )

    @staticmethod
    def settle() -> None:
        """Let PostgreSQL publish the last second's transaction counts before a reading."""
        time.sleep(STATS_FLUSH_SECONDS)


def per_workflow(before: Reading, after: Reading, workflows: int) -> dict[str, float]:
    """Cost per workflow between two readings (CPU in milliseconds). The readings' own
    queries add a few transactions and commands; over thousands of workflows they vanish."""
    cost = {
        f"cpu_ms_{role}": 1000 * (after.cpu[role] - before.cpu.get(role, 0.0)) / workflows
        for role in after.cpu
    }
    cost["pg_transactions"] = (after.transactions - before.transactions) / workflows
    cost["redis_commands"] = (after.redis_commands - before.redis_commands) / workflows
    return cost
