"""Input from peers that would stall or confuse the server is refused where it arrives."""

from __future__ import annotations

import logging
import re
import socket
import struct
import time

import orjson
import psycopg
import pytest
import trio
import trio_websocket

from tests._deadline import deadline
from tests._waiting import wait_until

from .conftest import Api, register

JSON = {"content-type": "application/json"}
ORDER = {"id": "o-1", "quantity": 2}
EVIL_PATTERN = "^(a+)+$"
EVIL_INPUT = "a" * 27 + "!"  # 8 s of backtracking for Python's re with the pattern above


@deadline(60)
async def test_a_backtracking_pattern_cannot_stall_other_clients(api: Api, workflow: str) -> None:
    """A worker registering a schema with a catastrophic regular expression is refused
    (naming the keyword and where it is), so the evil input has nothing to run against:
    another client's get_run is not 100 ms slower (95th percentile) while it tries than
    without it."""
    await register(api, workflow)
    run = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    status, body = await api.call("register_worker", {
        "worker_id": "w-evil", "concurrency": 1,
        "versions": [{"workflow": f"{workflow}-evil", "version": "1",
                      "input_schema": {"type": "string", "pattern": EVIL_PATTERN}}],
    })  # fmt: skip
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert "keyword 'pattern' is not allowed" in body["error"]["message"]
    assert body["error"]["errors"] == [
        "keyword 'pattern' is not allowed @ $.versions[0].input_schema"
    ]

    async def bystander() -> float:
        took = []
        for _ in range(50):
            started = time.perf_counter()
            await api.ok("get_run", {"run_id": run["run"]["id"]})  # type: ignore[index]
            took.append(time.perf_counter() - started)
        return sorted(took)[int(len(took) * 0.95)]

    alone = await bystander()
    attacked = 0.0

    async def attacked_bystander() -> None:
        nonlocal attacked
        attacked = await bystander()

    async def attacker() -> None:
        for _ in range(20):
            status, _ = await api.call("start_run", {
                "workflow": f"{workflow}-evil", "version": "1", "input": EVIL_INPUT})  # fmt: skip
            assert status == 404  # never registered: nothing validates the input

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacked_bystander)
        nursery.start_soon(attacker)
    assert attacked - alone < 0.1, (
        f"get_run p95 {alone * 1000:.0f} ms alone, {attacked * 1000:.0f} ms under attack"
    )


def _deep_start(workflow: str, levels: int) -> str:
    """A start whose input nests ``levels`` deep, as JSON text (too deep for orjson.dumps)."""
    nested = '{"next":' * levels + '"bottom"' + "}" * levels
    return f'{{"workflow": "{workflow}", "version": "1.0", "input": {nested}}}'


def _start(workflow: str, **options: object) -> dict[str, object]:
    return {"workflow": workflow, "version": "1.0", "input": ORDER, "options": options}


EVERY_SECOND = {"every_seconds": 1.0}

BAD_INPUTS: list[tuple[str, str, object, str]] = [
    # (case, operation, body (WF: the test's workflow), the path named)
    ("NUL in a reference ID", "start_run", lambda wf: _start(wf, reference_id="a\x00b"),
     "$.options.reference_id"),
    ("NUL in an input", "start_run",
     lambda wf: {"workflow": wf, "version": "1.0", "input": {"id": "o\x00", "quantity": 1}},
     "$.input.id"),
    ("NUL in a filter", "list_runs", lambda wf: {"workflow": "a\x00"}, "$.workflow"),
    ("NUL in a reason", "cancel_run", lambda wf: {"run_id": "RUN", "reason": "x\x00"},
     "$.reason"),
    ("1,000-deep input", "start_run", lambda wf: _deep_start(wf, 1000), "nested more than"),
    ("8 kB reference ID", "start_run", lambda wf: _start(wf, reference_id="r" * 8192),
     "$.options.reference_id"),
    ("negative run timeout", "start_run", lambda wf: _start(wf, timeout_seconds=-5),
     "$.options.timeout_seconds"),
    ("1e308 run timeout", "start_run", lambda wf: _start(wf, timeout_seconds=1e308),
     "$.options.timeout_seconds"),
    ("1e13 start delay", "start_run", lambda wf: _start(wf, start_delay_seconds=1e13),
     "$.options.start_delay_seconds"),
    ("1e308 schedule interval", "activate_schedule",
     lambda wf: {"workflow": wf, "version": "1.0", "input": ORDER,
                 "spec": {"every_seconds": 1e308}}, "$.spec.every_seconds"),
    ("1e13 schedule jitter", "activate_schedule",
     lambda wf: {"workflow": wf, "version": "1.0", "input": ORDER, "spec": EVERY_SECOND,
                 "policy": {"jitter_seconds": 1e13}}, "$.policy.jitter_seconds"),
    ("1e308 catch-up window", "activate_schedule",
     lambda wf: {"workflow": wf, "version": "1.0", "input": ORDER, "spec": EVERY_SECOND,
                 "policy": {"catchup_window_seconds": 1e308}},
     "$.policy.catchup_window_seconds"),
    ("negative worker concurrency", "register_worker",
     lambda wf: {"worker_id": "w9", "versions": [], "concurrency": -1}, "$.concurrency"),
    ("1e13 worker concurrency", "register_worker",
     lambda wf: {"worker_id": "w9", "versions": [], "concurrency": 10**13}, "$.concurrency"),
    ("a newline in a worker ID", "register_worker",
     lambda wf: {"worker_id": "w\nERROR forged", "versions": []}, "$.worker_id"),
    ("5 for a string", "start_run", lambda wf: _start(wf, reference_id=5),
     "$.options.reference_id"),
    ("true for an integer", "list_runs", lambda wf: {"limit": True}, "$.limit"),
    ("2.9 for an integer", "list_runs", lambda wf: {"limit": 2.9}, "$.limit"),
    ("a year-3000 start", "start_run", lambda wf: _start(wf, start_at="3000-01-01T00:00:00Z"),
     "$.options.start_at"),
]  # fmt: skip


@deadline(60)
async def test_every_bad_input_gets_a_4xx_naming_the_field_and_stores_nothing(
    api: Api, workflow: str, pg_url: str
) -> None:
    """Each input of the list (NUL bytes, nesting, huge or negative numbers, wrong types,
    oversized text, control characters) is refused with 400 and the field's path, on
    whichever carrier its operation uses; no run, schedule or worker is stored."""
    await register(api, workflow)
    run = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    run_id = run["run"]["id"]  # type: ignore[index]

    def counts() -> tuple[int, ...]:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM aiki_runs), (SELECT count(*) FROM aiki_schedules),"
                " (SELECT count(*) FROM aiki_workers)"
            ).fetchone()
            assert row is not None
            return tuple(int(n) for n in row)

    before = await trio.to_thread.run_sync(counts)
    outcomes = {}
    for case, operation, make, path in BAD_INPUTS:
        made = make(workflow)  # type: ignore[operator]
        if isinstance(made, str):  # raw JSON, over HTTP
            response = await api.http.post(
                f"{api.url}/api/v1/{operation}", content=made, headers=JSON
            )
            status, reply = response.status_code, response.json()
        else:
            text = orjson.dumps(made).replace(b'"RUN"', f'"{run_id}"'.encode())
            status, reply = await api.call(operation, orjson.loads(text))
        error = reply.get("error", {})
        named = any(path in line for line in error.get("errors", ()))
        outcomes[case] = (status, error.get("code"), named)
    assert outcomes == {case: (400, "bad_request", True) for case, *_ in BAD_INPUTS}
    assert await trio.to_thread.run_sync(counts) == before


@deadline(30)
async def test_what_a_browser_can_be_tricked_into_sending_is_refused(
    api: Api, workflow: str, pg_url: str
) -> None:
    """A cross-site ``text/plain`` POST (no preflight) is 415 and starts nothing; a WebSocket
    from a foreign Origin is refused at the upgrade while the server's own origin (and a
    client without one) is accepted; a request addressed to another host name than a
    loopback one (DNS rebinding) is 421."""
    await register(api, workflow)
    body = orjson.dumps({"workflow": workflow, "version": "1.0", "input": ORDER})
    response = await api.http.post(
        f"{api.url}/api/v1/start_run", content=body, headers={"content-type": "text/plain"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        415, "unsupported_media_type")  # fmt: skip
    listed = await api.ok("list_runs", {"workflow": workflow})
    assert listed["runs"] == []

    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    url = f"ws://{host}:{port}/api/v1/session"
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=[(b"origin", b"http://evil.example")]
        ):
            pass
    assert rejected.value.status_code == 403
    key = [(b"authorization", f"Bearer {api.keys['viewer']}".encode())]
    for origin in ([(b"origin", f"http://{host}:{port}".encode())], []):
        async with trio_websocket.open_websocket_url(url, extra_headers=origin + key) as ws:
            await ws.send_message('{"id": 1, "op": "list_workers", "body": {}}')
            assert "ok" in orjson.loads(await ws.get_message())

    response = await api.http.get(f"{api.url}/healthz", headers={"host": f"evil.example:{port}"})
    assert (response.status_code, response.json()["error"]["code"]) == (
        421, "misdirected_request")  # fmt: skip
    response = await api.http.get(f"{api.url}/healthz", headers={"host": f"localhost:{port}"})
    assert response.status_code == 200


@deadline(60)
async def test_a_page_of_runs_is_bounded_in_bytes_not_only_in_runs(api: Api, workflow: str) -> None:
    """Runs with 1.5 MB inputs: a page asked for 5 holds as many as fit 4 MiB (always one),
    and following the cursors lists every run once."""
    await register(api, workflow)
    big = "x" * 1_500_000
    started = []
    for n in range(5):
        run = await api.ok("start_run", {"workflow": workflow, "version": "1.0",
                                         "input": {"id": f"{n}{big}", "quantity": n}})  # fmt: skip
        started.append(run["run"]["id"])  # type: ignore[index]
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await api.ok("list_runs", {"workflow": workflow, "limit": 5, "cursor": cursor})
        pages.append([run["id"] for run in page["runs"]])  # type: ignore[attr-defined]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(found) for found in pages] == [2, 2, 1]
    assert [run_id for found in pages for run_id in found] == started[::-1]


@deadline(60)
async def test_a_reply_too_large_for_a_session_is_an_error_and_the_session_goes_on(
    api: Api, workflow: str
) -> None:
    """A run whose tasks recorded 17 MB of outputs: describing it over a session (which
    carries at most 16 MiB a message) is answered payload_too_large, and the session
    answers the next request (it used to be closed as "does not read")."""
    await register(api, workflow)
    run = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    run_id = run["run"]["id"]  # type: ignore[index]
    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    revision = claimed["run"]["revision"]  # type: ignore[index]
    for seq in range(9):
        await api.ok("record_task", {
            "run_id": run_id, "revision": revision, "address": f"task:big:{seq}", "seq": 0,
            "name": "big", "attempt": 1, "state": "completed", "output": "x" * 1_900_000,
        })  # fmt: skip
    websocket = await api.session("a-viewer", role="viewer")
    answers = []
    for request_id, operation in ((901, "describe_run"), (902, "get_run")):
        await websocket.send(orjson.dumps(
            {"id": request_id, "op": operation, "body": {"run_id": run_id}}).decode())  # fmt: skip
        while True:
            frame = orjson.loads(await websocket.receive())
            if frame.get("id") == request_id:
                answers.append(frame)
                break
    assert answers[0]["error"]["code"] == "payload_too_large", answers[0]
    assert "describe_run reply is" in answers[0]["error"]["message"]
    assert answers[1]["ok"]["id"] == run_id


async def _open_connections(api: Api) -> float:
    text = (await api.http.get(f"{api.url}/metrics")).text
    found = re.search(r"^aiki_connections_open (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1)) - 1  # (not the request asking)


@deadline(30)
async def test_a_client_gone_mid_body_is_no_server_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """POSTs whose client resets the connection halfway through the body: the server drops
    each request without logging an unexpected error (it used to log one, with a
    traceback, for every such connection)."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    baseline = await _open_connections(api)

    async def opened() -> bool:
        return await _open_connections(api) > baseline

    async def all_closed() -> bool:
        return await _open_connections(api) <= baseline

    for _ in range(5):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            f"POST /api/v1/get_run HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: "
            'application/json\r\ncontent-length: 100\r\n\r\n{"run'.encode()
        )
        with trio.fail_after(5):
            await wait_until(opened)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # a reset: the body never ends
    with trio.fail_after(10):
        await wait_until(all_closed)
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []


async def _answer_and_end(api: Api, head: str, body: bytes) -> bytes:
    """Send ``head`` and ``body`` on a raw connection; everything the server sends until it
    ends the connection (read while writing, as a client must)."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = bytearray()

    async def read() -> None:
        while chunk := await stream.receive_some(65536):
            received.extend(chunk)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await stream.send_all(head.encode() + body)
    return bytes(received)


@pytest.mark.slow  # (it waits out the 5 s drain bound)
@deadline(30)
async def test_a_request_refused_before_its_body_is_read_costs_one_connection_only(
    api: Api,
) -> None:
    """Refused before the body was read (413 for a body announced too large, 403 for a key
    of the wrong role): the client gets the answer in full, whether it goes on sending the
    body (3 MiB: read and dropped) or never does (the connection is closed after the
    drain bound), and the server goes on serving others. (hypercorn stalled such a
    connection; closing it from inside once ended the listener.)"""
    key = api.keys["viewer"]
    head = ("POST /api/v1/start_run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: %d\r\n\r\n")  # fmt: skip
    whole = await _answer_and_end(api, head % (3 * 1024 * 1024), b"x" * (3 * 1024 * 1024))
    assert whole.startswith(b"HTTP/1.1 403"), whole[:200]
    never = await _answer_and_end(api, head % 10**9, b"{")
    assert never.startswith(b"HTTP/1.1 403"), never[:200]
    assert b"start_run needs a key with role" in never
    assert (await api.http.get(f"{api.url}/healthz")).status_code == 200
    status, _ = await api.call("list_runs", {})
    assert status == 200
