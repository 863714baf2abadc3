"""Namespaces keep tenants apart, with real servers and workers: a worker of namespace A
runs A's work and never B's; B's keys cannot see, claim or control A's runs (a 404, as for
a run that does not exist); live updates and listings never cross; reference IDs and
versions are each namespace's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import trio

import aiki
from aiki.protocol import ClaimNext, ClaimRun, RegisterWorker, VersionSpec
from tests._deadline import deadline
from tests._processes import AikiProcess, run_aiki, start_aiki

from . import flows
from .conftest import Cluster

NAMESPACES = ("ns-a", "ns-b")


@pytest.fixture(scope="module")
def tenants(cluster: Cluster) -> Iterator[dict[str, dict[str, str]]]:
    """A client and a worker key in each of two namespaces, and a worker process serving
    ``main_worker`` in each (the cluster's own workers serve ``default``)."""
    admin = {"AIKI_SERVER_URL": cluster.url, "AIKI_API_KEY": cluster.keys["admin"]}
    made: dict[str, dict[str, str]] = {}
    workers: list[AikiProcess] = []
    try:
        for namespace in NAMESPACES:
            made[namespace] = {role: run_aiki(["keys", "create", "--role", role, "--namespace",
                                               namespace, "--name", f"{namespace} {role}"],
                                              admin)
                               for role in ("client", "worker")}  # fmt: skip
            workers.append(start_aiki(
                ["worker", "tests.e2e.flows:main_worker", "--server-url", cluster.url,
                 "--redis-url", cluster.redis_url, "--shutdown-grace", "2"],
                cluster.logs / f"worker-{namespace}.log",
                {**cluster.env(role="none"), "AIKI_API_KEY": made[namespace]["worker"]},
            ))  # fmt: skip
        for namespace, worker in zip(NAMESPACES, workers, strict=True):
            made[namespace]["worker_id"] = worker.wait_ready(r"aiki worker (\S+) serving").group(1)
        yield made
    finally:
        for worker in workers:
            worker.stop()


def _client(cluster: Cluster, key: str) -> aiki.Client:
    return aiki.Client(cluster.url, api_key=key)


async def _executed_by(client: aiki.Client, run_id: str) -> set[str | None]:
    details = await client.describe_run(run_id)
    return {step.worker_id for step in details.timeline if step.status == "running"}


@deadline(90)
async def test_a_namespace_runs_its_work_on_its_workers_and_hides_it_from_others(
    cluster: Cluster, tenants: dict[str, dict[str, str]]
) -> None:
    """A's run is executed by A's worker only; B's client gets 404 for it on every
    operation, lists none of it, and B's watch of every run sees B's run but none of A's;
    the same reference ID names a different run in each namespace."""
    a, b = tenants["ns-a"], tenants["ns-b"]
    reference = f"order-{uuid.uuid4().hex[:6]}"
    async with _client(cluster, a["client"]) as client_a, _client(cluster, b["client"]) as client_b:
        async with client_b.watch() as watch_b:  # every run B may see, from now on
            ran_a = await flows.one_task.with_(reference_id=reference).start(client_a, 4)
            done = await ran_a.wait_for_status("completed")
            assert (done.success, done.output, done.run.namespace) == (True, 8, "ns-a")
            assert await _executed_by(client_a, ran_a.run_id) == {a["worker_id"]}

            ran_b = await flows.one_task.with_(reference_id=reference).start(client_b, 5)
            assert ran_b.run_id != ran_a.run_id  # (a reference ID is its namespace's)
            with trio.fail_after(30):
                first = await watch_b.__anext__()
            assert isinstance(first, aiki.RunUpdate)
            assert (first.run_id, first.namespace) == (ran_b.run_id, "ns-b")  # none of A's
            assert (await ran_b.wait_for_status("completed")).output == 10
        assert await _executed_by(client_b, ran_b.run_id) == {b["worker_id"]}

        hidden = client_b.handle(ran_a.run_id)
        for attempt in (hidden.refresh, lambda: client_b.describe_run(ran_a.run_id),
                        lambda: client_b.cancel(ran_a.run_id),
                        lambda: client_b.requeue(ran_a.run_id),
                        lambda: client_b.wakeup(ran_a.run_id)):  # fmt: skip
            with pytest.raises(aiki.RunNotFoundError):
                await attempt()
        listed = await client_b.list_runs(workflow=flows.one_task.workflow)
        assert ran_a.run_id not in [run.id for run in listed.runs]
        assert ran_b.run_id in [run.id for run in listed.runs]
        workers_b = {worker.id for worker in await client_b.list_workers()}
        assert workers_b == {b["worker_id"]}
        async with cluster.client(role="admin") as admin:  # an admin sees every namespace
            assert (await admin.handle(ran_a.run_id).refresh()).namespace == "ns-a"


@deadline(60)
async def test_a_worker_of_one_namespace_cannot_claim_or_pose_as_another_namespaces_worker(
    cluster: Cluster, tenants: dict[str, dict[str, str]]
) -> None:
    """A run of A that nobody serves stays queued: a worker session of B that serves the
    very same workflow version neither pulls it nor claims it by ID (404), and cannot
    register under A's worker ID; a worker session of A pulls it."""
    a, b = tenants["ns-a"], tenants["ns-b"]
    version = VersionSpec(workflow="e2e-unserved", version=uuid.uuid4().hex[:6],
                          input_schema={"type": "integer"})  # fmt: skip
    unserved = aiki.workflow(version.workflow).version(version.version)(flows.one_task.handler)
    async with (
        _client(cluster, a["worker"]) as probe_a,
        _client(cluster, b["worker"]) as probe_b,
        _client(cluster, a["client"]) as client_a,
    ):
        await probe_a.call(RegisterWorker(worker_id=f"probe-a-{version.version}",
                                          versions=(version,)))  # fmt: skip
        await probe_b.call(RegisterWorker(worker_id=f"probe-b-{version.version}",
                                          versions=(version,)))  # fmt: skip
        queued = await unserved.start(client_a, 1)
        pulled = await probe_b.call(ClaimNext(worker_id=f"probe-b-{version.version}", limit=10))
        assert [claim.run.id for claim in pulled.claims] == []
        with pytest.raises(aiki.RunNotFoundError):
            await probe_b.call(ClaimRun(run_id=queued.run_id,
                                        worker_id=f"probe-b-{version.version}"))  # fmt: skip
        with pytest.raises(aiki.ForbiddenError, match="another namespace"):
            await probe_b.call(RegisterWorker(worker_id=a["worker_id"], versions=(version,)))
        pulled = await probe_a.call(ClaimNext(worker_id=f"probe-a-{version.version}", limit=10))
        assert [claim.run.id for claim in pulled.claims] == [queued.run_id]
