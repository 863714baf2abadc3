"""``aiki server --processes 2``: two whole server processes on one port (SO_REUSEPORT);
runs started through it complete, and one process killed under load is started again
while every run still completes once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from tests._deadline import deadline
from tests._waiting import wait_until

from ._load import completions, run_many, run_many_with_fault
from .conftest import Cluster

SERVER_ARGS = ["--processes", "2", "--claim-timeout", "3"]
"""A short claim timeout: a run claimed in the killed process's last moment (its claim's
answer lost with it) is released by the claim sweeper of the other."""
WORKER_ARGS = ["--heartbeat", "0.3"]


def _server_processes(parent: int) -> list[int]:
    """The server processes the ``aiki server`` parent supervises (not its helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if ppid == parent and "spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


@deadline(90)
async def test_two_server_processes_listen_on_one_port_and_serve_runs(cluster: Cluster) -> None:
    """Both processes hold a listening socket on the URL's port; runs complete."""
    port = int(cluster.url.rsplit(":", 1)[1])
    processes = _server_processes(cluster.server.pid)
    assert len(processes) == 2
    listening = _listening_inodes(port)
    assert all(_socket_inodes(pid) & listening for pid in processes)
    inputs = await run_many(cluster, 40, clients=8)
    async with cluster.client() as client:
        for run_id, x in inputs.items():
            result = await client.handle(run_id).wait_for_status("completed")
            assert (result.success, result.output) == (True, 2 * x)


@deadline(120)
async def test_a_server_process_killed_under_load_is_started_again_and_no_run_is_lost(
    cluster: Cluster,
) -> None:
    """SIGKILL one of the two processes while runs start and execute: the parent starts
    it again, clients and workers reconnect (to either), every run completes exactly once."""
    before = _server_processes(cluster.server.pid)
    inputs = await run_many_with_fault(cluster, 120, 6, lambda: os.kill(before[0], signal.SIGKILL))
    with trio.fail_after(30):
        await wait_until(lambda: _restarted(cluster.server.pid, before))
    async with cluster.client() as client:
        for run_id, x in inputs.items():
            result = await client.handle(run_id).wait_for_status("completed")
            assert (result.success, result.output) == (True, 2 * x)
    counts = await trio.to_thread.run_sync(completions, cluster, list(inputs))
    assert len(inputs) == 120
    assert counts == dict.fromkeys(inputs, 1)


async def _restarted(parent: int, before: list[int]) -> bool:
    now = _server_processes(parent)
    return len(now) == 2 and now != before
