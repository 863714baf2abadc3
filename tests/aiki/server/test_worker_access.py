"""Worker operations are for the worker holding the run: not plain HTTP, not a client's
session, not another worker; and a registered version's schemas cannot be replaced."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from tests._deadline import deadline

from .conftest import ORDER_SCHEMA, WORKER_OPERATIONS, Api, bearer, register

ORDER = {"id": "o-1", "quantity": 2}

WORKER_REQUESTS = {
    "register_worker": {"worker_id": "intruder", "versions": []},
    "deregister_worker": {"worker_id": "w1"},
    "claim_run": {"run_id": "RUN", "worker_id": "w1"},
    "claim_next": {"worker_id": "w1"},
    "offer_slot": {"worker_id": "w1", "queues": [{"workflow": "WF", "version": "1.0"}],
                   "wait_seconds": 0.01},
    "heartbeat": {"worker_id": "w1", "run_ids": ["RUN"]},
    "record_task": {"run_id": "RUN", "revision": 2, "address": "a", "seq": 0, "name": "a",
                    "attempt": 1, "state": "completed", "output": 1},
    "report_progress": {"run_id": "RUN", "revision": 2, "address": "a", "seq": 0, "task": "a"},
    "record_history": {"run_id": "RUN", "revision": 2, "history": {
        "settled": [{"address": "sleep:nap", "seq": 0, "position": 0, "withdrawn": True}]}},
    "transition_run": {"run_id": "RUN", "revision": 2, "status": "completed", "output": 9},
    "begin_wait": {"run_id": "RUN", "revision": 2, "kind": "sleep", "key": "nap", "seq": 0,
                   "seconds": 1},
    "suspend_run": {"run_id": "RUN", "revision": 2},
    "start_child": {"parent_id": "RUN", "revision": 2, "address": "c", "seq": 0,
                    "workflow": "WF", "version": "1.0", "input": ORDER},
}  # fmt: skip


def _body(operation: str, run_id: str, workflow: str) -> dict[str, object]:
    text = orjson.dumps(WORKER_REQUESTS[operation]).decode()
    return orjson.loads(text.replace("RUN", run_id).replace('"WF"', f'"{workflow}"'))


async def _claimed_run(api: Api, workflow: str) -> dict[str, object]:
    run = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    claimed = await api.ok("claim_run", {"run_id": run["run"]["id"], "worker_id": "w1"})  # type: ignore[index]
    assert claimed["type"] == "RunClaimed"
    return claimed["run"]  # type: ignore[return-value]


def test_every_worker_operation_is_covered_here() -> None:
    """The list below is every worker operation the protocol declares."""
    assert set(WORKER_REQUESTS) == WORKER_OPERATIONS


@deadline(30)
async def test_worker_operations_are_refused_over_plain_http(api: Api, workflow: str) -> None:
    """403 over HTTP for each worker operation, even with a worker key, naming the
    WebSocket session; the run is untouched."""
    await register(api, workflow)
    run = await _claimed_run(api, workflow)
    for operation in sorted(WORKER_REQUESTS):
        body = _body(operation, str(run["id"]), workflow)
        response = await api.http.post(f"{api.url}/api/v1/{operation}", json=body,
                                       headers=bearer(api.keys["worker"]))  # fmt: skip
        assert response.status_code == 403, (operation, response.text)
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert "WebSocket session" in error["message"]
    after = await api.ok("get_run", {"run_id": run["id"]})
    assert (after["status"], after["revision"]) == ("running", run["revision"])


@deadline(30)
async def test_worker_operations_are_refused_on_a_session_no_worker_registered(
    api: Api, workflow: str
) -> None:
    """A client's session (nothing registered on it) gets 403 for every worker operation."""
    await register(api, workflow)
    run = await _claimed_run(api, workflow)
    websocket = await api.session("a-client")  # opened, never registered
    for request_id, operation in enumerate(sorted(set(WORKER_REQUESTS) - {"register_worker"})):
        body = _body(operation, str(run["id"]), workflow)
        frame = {"id": request_id, "op": operation, "body": body}
        await websocket.send(orjson.dumps(frame).decode())
        reply = orjson.loads(await websocket.receive())
        assert reply["error"]["code"] == "forbidden", (operation, reply)
        assert "register_worker" in reply["error"]["message"]
    after = await api.ok("get_run", {"run_id": run["id"]})
    assert (after["status"], after["revision"]) == ("running", run["revision"])


@deadline(30)
async def test_a_worker_cannot_act_as_another_or_write_to_its_runs(api: Api, workflow: str) -> None:
    """Worker w2 knows w1's run and its revision (get_run tells anyone) but cannot claim as
    w1, heartbeat for or deregister w1, or record, report, wait, suspend, start children or complete
    the run w1 holds: nothing about the run changes (nor does its history)."""
    await register(api, workflow)
    await register(api, workflow, "w2")
    run = await _claimed_run(api, workflow)
    ids = itertools.count(100)
    websocket = await api.session("w2")
    refusals = {}
    for operation in sorted(set(WORKER_REQUESTS) - {"register_worker", "claim_next"}):
        body = _body(operation, str(run["id"]), workflow)
        request_id = next(ids)
        await websocket.send(
            orjson.dumps({"id": request_id, "op": operation, "body": body}).decode()
        )
        frame = orjson.loads(await websocket.receive())
        assert frame["id"] == request_id
        refusals[operation] = frame.get("error", {}).get("code")
    assert refusals == {
        "claim_run": "forbidden",  # as w1
        "deregister_worker": "forbidden",  # w1
        "heartbeat": "forbidden",  # for w1
        "offer_slot": "forbidden",  # as w1
        "record_task": "stale_revision",
        "record_history": "stale_revision",
        "report_progress": "stale_revision",
        "transition_run": "stale_revision",
        "begin_wait": "stale_revision",
        "suspend_run": "stale_revision",
        "start_child": "stale_revision",
    }
    after = await api.ok("get_run", {"run_id": run["id"]})
    assert (after["status"], after["revision"], after["output"]) == ("running", 2, None)
    details = await api.ok("describe_run", {"run_id": run["id"]})
    assert (details["tasks"], details["progress"]) == ([], [])
    listed = await api.ok("list_runs", {"workflow": workflow})
    assert len(listed["runs"]) == 1  # no child was started
    again = await api.ok("claim_run", {"run_id": run["id"], "worker_id": "w1"})
    assert again["settled"] == []  # w2's history was not stored


@deadline(30)
async def test_a_registered_version_keeps_its_schemas(api: Api, workflow: str) -> None:
    """Registering a version again with another input schema (``true`` would turn
    validation off) is refused with version_conflict, and the first schema still holds."""
    await register(api, workflow)
    status, body = await api.call("register_worker", {
        "worker_id": "w2", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": True}],
    })  # fmt: skip
    assert (status, body["error"]["code"]) == (409, "version_conflict")
    assert f"{workflow}@1.0" in body["error"]["message"]
    status, body = await api.call(
        "start_run", {"workflow": workflow, "version": "1.0", "input": {"id": 5}}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    same = await api.ok("register_worker", {
        "worker_id": "w3", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA}],
    })  # fmt: skip
    assert same["worker_id"] == "w3"


async def _call(websocket: Any, request_id: int, operation: str, body: object) -> dict[str, Any]:
    await websocket.send(orjson.dumps({"id": request_id, "op": operation, "body": body}).decode())
    frame: dict[str, Any] = orjson.loads(await websocket.receive())
    assert frame["id"] == request_id
    return frame


@deadline(30)
async def test_a_live_workers_id_is_not_registered_by_another_session(
    api: Api, workflow: str
) -> None:
    """w1 registered on its session (and claimed a run); a second session registering w1
    is refused (409), and cannot write to w1's run, which w1 keeps and completes. The same
    process reconnecting (its incarnation) takes the ID over; once w1 deregistered, any
    session may register it."""
    version = {"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA}
    first = await api.session("w1")
    registration = {"worker_id": "w1", "versions": [version], "incarnation": "process-1-secret"}
    assert "ok" in await _call(first, 1, "register_worker", registration)
    run = await _claimed_run(api, workflow)

    second = await api.session("intruder")  # another session, with a worker key too
    for request_id, body in enumerate([
        {"worker_id": "w1", "versions": [version]},
        {"worker_id": "w1", "versions": [version], "incarnation": "a-guess"},
    ]):  # fmt: skip
        refused = await _call(second, request_id, "register_worker", body)
        assert refused["error"]["code"] == "conflict", refused
        assert "live worker" in refused["error"]["message"]
    write = await _call(second, 9, "transition_run", _body("transition_run", str(run["id"]),
                                                               workflow))  # fmt: skip
    assert write["error"]["code"] == "forbidden", write  # (nothing registered there)

    done = await api.ok("transition_run", {"run_id": run["id"], "revision": 2,
                                           "status": "completed", "output": 1})  # fmt: skip
    assert (done["status"], done["revision"]) == ("completed", 3)  # w1 kept its run

    # The same process, reconnected on a new session (its incarnation), takes w1 over.
    assert "ok" in await _call(second, 10, "register_worker", registration)
    assert "ok" in await _call(second, 11, "deregister_worker", {"worker_id": "w1"})
    # w1 is gone: anyone of the namespace may register the ID.
    assert "ok" in await _call(first, 12, "register_worker", {"worker_id": "w1",
                                                               "versions": [version]})  # fmt: skip
