"""/metrics in the Prometheus format, scraped after runs, counts them exactly (with a key
on the API's port, without one on the metrics listener); a key of another namespace reads
nothing of these runs, nor the server's own series; /readyz reports a ready server."""

from __future__ import annotations

import socket
import uuid

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from aiki.server.store import keys
from tests._deadline import deadline
from transport.postgres import Transaction

from . import flows
from .conftest import Cluster


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


METRICS_PORT = _free_port()
SERVER_ARGS = ["--metrics-host", "127.0.0.1", "--metrics-port", str(METRICS_PORT)]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@deadline(60)
async def test_metrics_count_the_runs_executed(cluster: Cluster) -> None:
    """Seven W1 runs complete and two runs fail (in this module's own server): the
    started/completed/failed counters, the task histogram and the gauges agree."""
    with psycopg.connect(cluster.database_url, autocommit=True) as connection:
        other, _ = keys.create(Transaction(connection), role="viewer", namespace="elsewhere",
                               name="another namespace's viewer", expires_at=None)  # fmt: skip
    async with cluster.client() as client:
        completing = [await flows.one_task.start(client, x) for x in range(7)]
        failing = [await flows.failing_flow.start(client, f"m-{uuid.uuid4().hex[:6]}")
                   for _ in range(2)]  # fmt: skip
        for handle in completing:
            assert (await handle.wait_for_status("completed")).success
        for failed in failing:
            assert (await failed.wait_for_status("completed")).status == "failed"
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{cluster.url}/metrics", headers=cluster.headers())
            ready = await http.get(f"{cluster.url}/readyz")
            without_key = await http.get(f"{cluster.url}/metrics")
            of_another = await http.get(
                f"{cluster.url}/metrics", headers={"authorization": f"Bearer {other}"}
            )
            listener = await http.get(f"http://127.0.0.1:{METRICS_PORT}/metrics")
            elsewhere = await http.get(f"http://127.0.0.1:{METRICS_PORT}/api/v1/list_runs")
    assert without_key.status_code == 401
    assert listener.status_code == 200  # the metrics listener needs no key, and serves
    assert elsewhere.status_code == 404  # nothing else
    assert "aiki_runs_started_total" in listener.text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = _samples(response.text)  # a viewer key of namespace ``default``: its series
    w1, failing_name = flows.one_task.workflow, flows.failing_flow.workflow
    ns = ("namespace", "default")
    assert found[("aiki_runs_started_total", (ns, ("workflow", w1)))] == 7
    assert found[("aiki_runs_completed_total", (ns, ("workflow", w1)))] == 7
    assert found[("aiki_runs_started_total", (ns, ("workflow", failing_name)))] == 2
    assert found[("aiki_runs_failed_total", (ns, ("workflow", failing_name)))] == 2
    assert ("aiki_runs_failed_total", (ns, ("workflow", w1))) not in found
    assert found[("aiki_task_duration_seconds_count", (ns, ("task", "double")))] == 7
    assert all(value == 0 for (name, _), value in found.items() if name == "aiki_queue_depth")
    assert all(dict(labels).get("namespace") == "default" for _, labels in found), found
    # Another namespace's key reads nothing of these runs, nor the server's own series.
    assert of_another.status_code == 200
    assert _samples(of_another.text) == {}
    # The server's own series: for keys of every namespace, and the metrics listener.
    everything = _samples(listener.text)
    assert everything[("aiki_runs_started_total", (ns, ("workflow", w1)))] == 7
    assert everything[("aiki_websocket_sessions", ())] >= 2  # the workers' sessions
    assert everything[("aiki_claim_recoveries_total", ())] == 0
    restarts = {labels: value for (name, labels), value in everything.items()
                if name == "aiki_actor_restarts_total"}  # fmt: skip
    assert (("actor", "server/committer"),) in restarts
    assert set(restarts.values()) == {0}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}
