"""Waits a handler gave up, on the server: a withdrawn wait takes no event, an event it
had taken unseen goes to the next wait for it, and a run is suspended only on waits that
can wake it."""

from __future__ import annotations

import psycopg

from tests._deadline import deadline
from tests._waiting import wait_until

from .conftest import ORDER_SCHEMA, Api

ORDER = {"id": "o-1", "quantity": 2}


async def _claimed(api: Api, workflow: str) -> tuple[str, int]:
    """A run of ``workflow``@1.0 (declaring event 'go'), claimed by w1: (ID, revision)."""
    await api.ok("register_worker", {"worker_id": "w1", "versions": [{
        "workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA,
        "event_schemas": {"go": {}}}]})  # fmt: skip
    started = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    run_id = str(started["run"]["id"])  # type: ignore[index]
    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    return run_id, int(claimed["run"]["revision"])  # type: ignore[index]


async def _wait(
    api: Api, run_id: str, revision: int, seq: int, **extra: object
) -> dict[str, object]:
    return await api.ok("begin_wait", {"run_id": run_id, "revision": revision, "kind": "event",
                                       "key": "go", "seq": seq, **extra})  # fmt: skip


def _given_up(seq: int, position: int) -> dict[str, object]:
    return {"address": "event:go", "seq": seq, "position": position, "withdrawn": True}


def _rows(pg_url: str, sql: str, run_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(sql, (run_id,)).fetchall()


@deadline(30)
async def test_a_withdrawn_wait_takes_no_event_and_the_next_wait_gets_it(
    api: Api, workflow: str, pg_url: str
) -> None:
    """A wait given up (its branch was cancelled) is withdrawn: an event sent then waits
    for the next wait of its name, which takes it at once."""
    run_id, revision = await _claimed(api, workflow)
    assert (await _wait(api, run_id, revision, 0))["state"] == "pending"
    await api.ok("record_history", {"run_id": run_id, "revision": revision,
                                    "history": {"settled": [_given_up(0, 0)]}})  # fmt: skip
    await api.ok("send_event", {"run_id": run_id, "name": "go", "payload": {"n": 1}})
    assert _rows(pg_url, "SELECT consumed_by FROM aiki_events WHERE run_id = %s",
                 run_id) == [(None,)]  # fmt: skip
    taken = await _wait(api, run_id, revision, 1)
    assert (taken["state"], taken["result"]) == ("completed", {"n": 1})
    states = _rows(pg_url, "SELECT seq, state FROM aiki_waits WHERE run_id = %s ORDER BY seq",
                   run_id)  # fmt: skip
    assert states == [(0, "withdrawn"), (1, "completed")]


@deadline(30)
async def test_an_event_a_wait_took_unseen_goes_to_the_next_wait_when_it_is_given_up(
    api: Api, workflow: str, pg_url: str
) -> None:
    """The oldest pending wait takes an event while the run executes; the handler gives
    that wait up without having seen it: the event goes to the next pending wait."""
    run_id, revision = await _claimed(api, workflow)
    await _wait(api, run_id, revision, 0)
    await _wait(api, run_id, revision, 1)
    await api.ok("send_event", {"run_id": run_id, "name": "go", "payload": {"n": 7}})
    assert _rows(pg_url, "SELECT consumed_by FROM aiki_events WHERE run_id = %s",
                 run_id) == [(0,)]  # fmt: skip
    await api.ok("record_history", {"run_id": run_id, "revision": revision,
                                    "history": {"settled": [_given_up(0, 0)]}})  # fmt: skip
    assert _rows(pg_url, "SELECT consumed_by FROM aiki_events WHERE run_id = %s",
                 run_id) == [(1,)]  # fmt: skip
    states = _rows(pg_url, "SELECT seq, state, result FROM aiki_waits WHERE run_id = %s"
                                " ORDER BY seq", run_id)  # fmt: skip
    assert states == [(0, "withdrawn", None), (1, "completed", {"n": 7})]
    again = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    assert again["settled"] == [{**_given_up(0, 0), "error": None}]


@deadline(30)
async def test_a_run_is_suspended_only_on_waits_that_can_wake_it(api: Api, workflow: str) -> None:
    """Suspending on no wait, or on a wait given up (here in the same request), queues
    the run again instead: a suspended run always waits for something that can wake it."""
    run_id, revision = await _claimed(api, workflow)
    await _wait(api, run_id, revision, 0)
    nothing = await api.ok("suspend_run", {"run_id": run_id, "revision": revision})
    assert nothing["status"] == "queued"

    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    revision = int(claimed["run"]["revision"])  # type: ignore[index]
    given_up = await api.ok("suspend_run", {
        "run_id": run_id, "revision": revision, "blocked_on": [["event", "go", 0]],
        "history": {"settled": [_given_up(0, 0)]},
    })  # fmt: skip
    assert given_up["status"] == "queued"

    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    revision = int(claimed["run"]["revision"])  # type: ignore[index]
    await _wait(api, run_id, revision, 1)
    waiting = await api.ok("suspend_run", {"run_id": run_id, "revision": revision,
                                           "blocked_on": [["event", "go", 1]]})  # fmt: skip
    assert waiting["status"] == "awaiting_event"


@deadline(30)
async def test_history_a_worker_sends_is_checked_and_stored_once(api: Api, workflow: str) -> None:
    """A step settled twice in one request, or at one position twice, is refused naming
    the field (nothing stored); a repeated request stores nothing twice."""
    run_id, revision = await _claimed(api, workflow)
    twice = {"run_id": run_id, "revision": revision, "history": {"settled": [
        {"address": "sleep:a", "seq": 0, "position": 0},
        {"address": "sleep:a", "seq": 0, "position": 1}]}}  # fmt: skip
    status, reply = await api.call("record_history", twice)
    assert status == 400
    assert reply["error"]["errors"] == ["@ $.history.settled"]  # type: ignore[index]
    once = {"run_id": run_id, "revision": revision, "history": {"settled": [
        {"address": "sleep:a", "seq": 0, "position": 0}]}}  # fmt: skip
    await api.ok("record_history", once)
    await api.ok("record_history", once)
    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    assert [entry["address"] for entry in claimed["settled"]] == ["sleep:a"]  # type: ignore[union-attr]


@deadline(30)
async def test_a_new_workflow_attempt_forgets_the_step_order_and_the_waits_given_up(
    api: Api, workflow: str
) -> None:
    """A run retried after a failure replays by address: the order its steps settled in
    and the waits it gave up are gone (the new attempt waits afresh); its pending waits
    stay."""
    run_id, revision = await _claimed(api, workflow)
    await _wait(api, run_id, revision, 0)
    await _wait(api, run_id, revision, 1)
    await api.ok("transition_run", {
        "run_id": run_id, "revision": revision, "status": "awaiting_retry",
        "retry_delay_seconds": 0, "reason": "retry",
        "error": {"type": "Boom", "message": "first attempt"},
        "history": {"settled": [_given_up(0, 0)]},
    })  # fmt: skip

    async def queued() -> bool:
        return (await api.ok("get_run", {"run_id": run_id}))["status"] == "queued"

    await wait_until(queued, interval=0.02)
    again = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    assert again["run"]["attempt"] == 2  # type: ignore[index]
    assert again["settled"] == []
    assert [(w["seq"], w["state"]) for w in again["waits"]] == [(1, "pending")]  # type: ignore[union-attr]
