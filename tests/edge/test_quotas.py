"""A key over its request quota is refused with 429 and Retry-After (over a session:
`aiki.RateLimitedError`), counted in /metrics, while another key's requests go on being
answered in time (issue 27: no key had a quota)."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import threading
import time

import pytest
import trio

import aiki
from tests._deadline import deadline

from ._raw import address
from .conftest import Cluster

RATE = 20
SERVER_ARGS = ["--key-requests-per-second", str(RATE), "--key-request-burst", str(RATE)]
FLOODERS = 4
FLOOD_SECONDS = 4.0
BODY = json.dumps({"limit": 1}).encode()


def _post(connection: http.client.HTTPConnection, key: str) -> tuple[int, dict[str, str], bytes]:
    connection.request("POST", "/api/v1/list_runs", body=BODY, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})  # fmt: skip
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _flood(
    cluster: Cluster, until: float, answers: list[tuple[int, dict[str, str], bytes]]
) -> None:
    host, port = address(cluster)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        while time.monotonic() < until:
            answers.append(_post(connection, cluster.keys["viewer"]))
    finally:
        connection.close()


def _bystander(cluster: Cluster, until: float) -> list[float]:
    host, port = address(cluster)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    times = []
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            status, _, body = _post(connection, cluster.keys["client"])
            assert status == 200, body
            times.append(time.monotonic() - started)
            time.sleep(max(0.0, started + 2 / RATE - time.monotonic()))  # half its quota
    finally:
        connection.close()
    return times


def _over_quota(cluster: Cluster) -> float:
    host, port = address(cluster)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers=cluster.headers("admin"))
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    match = re.search(r'^aiki_requests_over_quota_total\{namespace="default"\} (\S+)$', text,
                      re.MULTILINE)  # fmt: skip
    return 0.0 if match is None else float(match.group(1))


@deadline(60)
async def test_a_key_over_its_quota_gets_429_and_a_bystander_is_answered_in_time(
    cluster: Cluster,
) -> None:
    counted_before = await trio.to_thread.run_sync(_over_quota, cluster)
    until = time.monotonic() + FLOOD_SECONDS
    answers: list[tuple[int, dict[str, str], bytes]] = []
    flooders = [threading.Thread(target=_flood, args=(cluster, until, answers))
                for _ in range(FLOODERS)]  # fmt: skip
    started = time.monotonic()
    for thread in flooders:
        thread.start()
    times = await trio.to_thread.run_sync(_bystander, cluster, until)
    for thread in flooders:
        await trio.to_thread.run_sync(thread.join)
    took = time.monotonic() - started

    served = [answer for answer in answers if answer[0] == 200]
    refused = [answer for answer in answers if answer[0] == 429]
    assert len(served) + len(refused) == len(answers), {answer[0] for answer in answers}
    assert len(served) <= RATE + RATE * took + 1  # its burst, then its rate
    assert len(served) >= RATE  # (the burst at least)
    assert len(refused) > 10 * len(served)
    for _, headers, body in refused[:50]:
        assert int(headers["retry-after"]) >= 1
        error = json.loads(body)["error"]
        assert error["code"] == "rate_limited"
        assert 0 < error["retry_after_seconds"] <= 1 / RATE + 0.01
        assert "requests a second" in error["message"]
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"quota: the flooder sent {len(answers)} requests ({len(served)} served, "
          f"{len(refused)} refused 429); the bystander's p99 {p99 * 1000:.0f} ms "
          f"over {len(times)} requests")  # fmt: skip
    assert p99 < 0.5, f"the bystander's p99 was {p99:.2f} s"
    counted = await trio.to_thread.run_sync(_over_quota, cluster)
    assert counted >= counted_before + len(refused)


@deadline(60)
async def test_a_session_over_its_quota_gets_rate_limited_errors_and_carries_on(
    cluster: Cluster,
) -> None:
    async with cluster.client("viewer") as viewer:  # one WebSocket session
        with pytest.raises(aiki.RateLimitedError) as refused:  # noqa: PT012 - the loop is the point
            for _ in range(RATE * 5):
                await viewer.list_runs(limit=1)
        assert 0 < refused.value.retry_after_seconds <= 1 / RATE + 0.01
        await trio.sleep(refused.value.retry_after_seconds)  # the refusal's own word
        await viewer.list_runs(limit=1)  # the same session, served again
