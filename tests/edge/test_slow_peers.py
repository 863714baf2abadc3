"""No actor waits on a peer: a session that never reads delays neither the timers nor
anyone else; it loses its own session instead."""

from __future__ import annotations

import functools
import time

import attrs
import trio

import aiki
from aiki.protocol import OPERATIONS, RegisterWorker
from tests._deadline import deadline
from tests.e2e import waits_flows as flows

from ._raw import RawSession
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"
SERVER_ARGS = ["--dispatch-ahead", "1000"]
"""The test's raw sessions act as workers that claim the runs they name, not what a stream
brings: no start waits at the gate for its queue's room (it would be unclaimable)."""

REGISTER = OPERATIONS.by_name["register_worker"]


@aiki.workflow("edge-stuck").version("1")
async def stuck_flow(run: aiki.Run[str], text: str) -> str:
    """A version only the stuck session serves: no real worker takes its runs."""
    return text


BIG = "x" * 200_000
"""Inputs that make every page of runs a large reply."""


@deadline(90)
async def test_a_session_that_never_reads_delays_no_timer(cluster: Cluster) -> None:
    """A worker session claims a run with a 1 s timeout, floods the server with requests
    and never reads: when the timeout fires, the push to it must not hold the timers. A
    1 s sleep and a 1 s delayed start elsewhere end on time, and the stuck session is
    closed."""
    registration = RegisterWorker(worker_id="edge-stuck", versions=(stuck_flow.spec(),))
    async with cluster.client() as client, cluster.client(role="worker") as registrar:
        await registrar.call(attrs.evolve(registration, worker_id="edge-registrar"))
        big = [(await stuck_flow.start(client, BIG)).run_id for _ in range(60)]
        stuck_run = await stuck_flow.with_(timeout_seconds=1.0).start(client, "stuck")
        stuck = await trio.to_thread.run_sync(
            functools.partial(RawSession, cluster, receive_buffer=2048)
        )
        try:
            await trio.to_thread.run_sync(
                stuck.send, "register_worker", REGISTER.request.unstructure(registration)
            )
            assert "ok" in await trio.to_thread.run_sync(stuck.reply)
            await trio.to_thread.run_sync(
                stuck.send, "claim_run", {"run_id": stuck_run.run_id, "worker_id": "edge-stuck"}
            )
            claimed = await trio.to_thread.run_sync(stuck.reply)
            assert claimed["ok"]["type"] == "RunClaimed", claimed  # type: ignore[index]
            for run_id in big:  # 200 KB each: they pile up, the session never reads
                await trio.to_thread.run_sync(
                    stuck.send, "claim_run", {"run_id": run_id, "worker_id": "edge-stuck"}
                )

            started = time.monotonic()
            sleeper = await flows.sleeper.start(client, 1.0)
            delayed = await flows.quick_flow.with_(trigger=aiki.trigger.after(seconds=1)).start(
                client, 2
            )
            slept = await sleeper.wait_for_status("completed")
            ran = await delayed.wait_for_status("completed")
            took = time.monotonic() - started
            timed_out = await aiki.RunHandle(client, stuck_run.run_id, None).wait_for_status(
                "failed"
            )
        finally:
            stuck.close()
    assert (slept.success, ran.success) == (True, True)
    assert took < 4.0, f"a 1 s sleep and a 1 s delayed start took {took:.1f} s"
    assert timed_out.run.error is not None
    assert timed_out.run.error.code == "run_timeout"
    log = cluster.server.log.read_text()
    assert "session edge-stuck does not read" in log, log[-2000:]
