"""The server's operations over real HTTP: validation, idempotent starts, claims, fencing,
transitions, long-poll waits, listing, and publishing to Redis Streams."""

from __future__ import annotations

import psycopg
import pytest
import trio

import aiki
from aiki.protocol import GROUP, QUEUED_RUN, StartRun, stream_for
from tests._deadline import deadline
from transport.redis_streams import open_redis_streams

from .conftest import Api, register

JSON = {"content-type": "application/json"}
ORDER = {"id": "o-1", "quantity": 2}


async def _count_runs(pg_url: str) -> int:
    def count() -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM aiki_runs").fetchone()
            return int(row[0]) if row else 0

    return await trio.to_thread.run_sync(count)


@deadline(30)
async def test_start_creates_a_queued_run_that_can_be_read_back(api: Api, workflow: str) -> None:
    """start_run returns the queued run; get_run finds it by ID."""
    await register(api, workflow)
    started = await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER})
    run = started["run"]
    assert started["created"] is True
    assert (run["status"], run["revision"], run["input"]) == ("queued", 1, ORDER)
    again = await api.ok("get_run", {"run_id": run["id"]})
    assert again == run


@deadline(30)
async def test_bad_requests_get_clear_4xx_errors_and_store_nothing(
    api: Api, workflow: str, pg_url: str
) -> None:
    """Unknown version, wrong input type, malformed JSON, unknown fields and operations."""
    await register(api, workflow)
    status, body = await api.call(
        "start_run", {"workflow": workflow, "version": "9.9", "input": ORDER}
    )
    assert (status, body["error"]["code"]) == (404, "workflow_not_found")
    assert "not registered" in body["error"]["message"]

    bad_input = {"id": "o-1", "quantity": "two", "extra": True}
    status, body = await api.call(
        "start_run", {"workflow": workflow, "version": "1.0", "input": bad_input}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    errors = body["error"]["errors"]
    assert any("@ $.quantity" in error for error in errors), errors
    assert any("extra" in error for error in errors), errors

    response = await api.http.post(
        f"{api.url}/api/v1/start_run", content=b"{not json", headers=JSON
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"

    status, body = await api.call("start_run", {"workflow": workflow, "version": "1.0", "nope": 1})
    assert status == 400
    assert "nope" in body["error"]["message"]

    status, body = await api.call("explode", {})
    assert (status, body["error"]["code"]) == (404, "not_found")

    status, body = await api.call("get_run", {"run_id": "not-a-uuid"})
    assert (status, body["error"]["code"]) == (404, "run_not_found")
    assert await _count_runs(pg_url) == 0


@deadline(30)
async def test_oversized_bodies_are_refused(api: Api, workflow: str) -> None:
    """A body over the limit gets 413 before it is parsed."""
    response = await api.http.post(
        f"{api.url}/api/v1/start_run", content=b"x" * (3 * 1024 * 1024), headers=JSON
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@deadline(30)
async def test_reference_ids_make_starts_idempotent(api: Api, workflow: str, pg_url: str) -> None:
    """Same reference and input: the same run. Different input: a conflict, unless
    return_existing is asked for."""
    await register(api, workflow)
    body = {
        "workflow": workflow,
        "version": "1.0",
        "input": ORDER,
        "options": {"reference_id": "order-1"},
    }
    first = await api.ok("start_run", body)
    second = await api.ok("start_run", body)
    assert second["created"] is False
    assert second["run"]["id"] == first["run"]["id"]

    changed = {**body, "input": {"id": "o-1", "quantity": 3}}
    status, error = await api.call("start_run", changed)
    assert (status, error["error"]["code"]) == (409, "reference_conflict")
    assert error["error"]["run_id"] == first["run"]["id"]

    lenient = {**changed, "options": {"reference_id": "order-1", "conflict": "return_existing"}}
    assert (await api.ok("start_run", lenient))["run"]["id"] == first["run"]["id"]
    found = await api.ok(
        "get_run", {"workflow": workflow, "version": "1.0", "reference_id": "order-1"}
    )
    assert found["id"] == first["run"]["id"]
    assert await _count_runs(pg_url) == 1


@deadline(30)
async def test_concurrent_starts_with_one_reference_create_one_run(
    api: Api, workflow: str, pg_url: str
) -> None:
    """Racing starts with the same reference ID all get the same run."""
    await register(api, workflow)
    body = {
        "workflow": workflow,
        "version": "1.0",
        "input": ORDER,
        "options": {"reference_id": "race"},
    }
    ids: set[str] = set()

    async def start() -> None:
        ids.add((await api.ok("start_run", body))["run"]["id"])

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(start)
    assert len(ids) == 1
    assert await _count_runs(pg_url) == 1


async def _start_and_claim(api: Api, workflow: str, worker: str = "w1") -> dict[str, object]:
    run = (await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER}))[
        "run"
    ]
    claimed = await api.ok("claim_run", {"run_id": run["id"], "worker_id": worker})
    assert claimed["type"] == "RunClaimed", claimed
    return claimed["run"]


@deadline(30)
async def test_a_claimed_run_completes_with_its_task_outcomes_recorded(
    api: Api, workflow: str
) -> None:
    """claim → record task → complete; a second claim is rejected; the history is replayable."""
    await register(api, workflow)
    await register(api, workflow, "w2")
    run = await _start_and_claim(api, workflow)
    assert (run["status"], run["revision"]) == ("running", 2)
    rejected = await api.ok("claim_run", {"run_id": run["id"], "worker_id": "w2"})
    assert rejected["type"] == "ClaimRejected"
    task = {
        "run_id": run["id"],
        "revision": 2,
        "address": "charge:abc",
        "seq": 0,
        "name": "charge",
        "attempt": 1,
        "state": "completed",
        "input": ORDER,
        "output": "ch_1",
    }
    await api.ok("record_task", task)
    await api.ok("record_task", task)  # a repeated report is idempotent
    done = await api.ok(
        "transition_run",
        {"run_id": run["id"], "revision": 2, "status": "completed", "output": {"receipt": "r1"}},
    )
    assert (done["status"], done["revision"]) == ("completed", 3)
    final = await api.ok("get_run", {"run_id": run["id"]})
    assert (final["status"], final["output"]) == ("completed", {"receipt": "r1"})


@deadline(30)
async def test_a_stale_write_is_rejected_and_leaves_the_run_unchanged(
    api: Api, workflow: str
) -> None:
    """After a requeue bumps the revision, the old owner's writes are refused (fencing)."""
    await register(api, workflow)
    await register(api, workflow, "w2")
    run = await _start_and_claim(api, workflow)
    requeued = await api.ok("requeue_run", {"run_id": run["id"], "reason": "recovery"})
    assert (requeued["status"], requeued["revision"]) == ("queued", 3)
    before = await api.ok("get_run", {"run_id": run["id"]})

    stale_task = {
        "run_id": run["id"],
        "revision": 2,
        "address": "charge:abc",
        "seq": 0,
        "name": "charge",
        "attempt": 1,
        "state": "completed",
        "output": "late",
    }
    status, body = await api.call("record_task", stale_task)
    assert (status, body["error"]["code"]) == (409, "stale_revision")
    status, body = await api.call(
        "transition_run",
        {"run_id": run["id"], "revision": 2, "status": "completed", "output": "late"},
    )
    assert (status, body["error"]["code"]) == (409, "stale_revision")
    assert await api.ok("get_run", {"run_id": run["id"]}) == before

    reclaimed = await api.ok("claim_run", {"run_id": run["id"], "worker_id": "w2"})
    assert reclaimed["run"]["revision"] == 4


@deadline(30)
async def test_invalid_transitions_are_refused(api: Api, workflow: str) -> None:
    """A worker cannot move a run anywhere the state machine forbids, or fail it silently."""
    await register(api, workflow)
    run = await _start_and_claim(api, workflow)
    status, body = await api.call(
        "transition_run", {"run_id": run["id"], "revision": 2, "status": "scheduled"}
    )
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    status, body = await api.call(
        "transition_run", {"run_id": run["id"], "revision": 2, "status": "failed"}
    )
    assert status == 400  # failing needs an error
    await api.ok("transition_run", {"run_id": run["id"], "revision": 2, "status": "completed"})
    status, body = await api.call("requeue_run", {"run_id": run["id"]})
    assert (status, body["error"]["code"]) == (409, "invalid_transition")


@deadline(30)
async def test_wait_run_is_answered_when_the_status_is_reached(api: Api, workflow: str) -> None:
    """A long-poll wait returns as soon as another request completes the run (no client polling)."""
    await register(api, workflow)
    run = await _start_and_claim(api, workflow)
    seen: list[dict[str, object]] = []

    async def waiter() -> None:
        seen.append(
            await api.ok(
                "wait_run", {"run_id": run["id"], "statuses": ["completed"], "timeout_seconds": 20}
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert not seen
        await api.ok(
            "transition_run",
            {"run_id": run["id"], "revision": 2, "status": "completed", "output": 1},
        )
    assert seen[0]["status"] == "completed"


@deadline(30)
async def test_wait_run_times_out_with_the_current_state(api: Api, workflow: str) -> None:
    """An unmet wait returns the run as it is after the timeout."""
    await register(api, workflow)
    run = (await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER}))[
        "run"
    ]
    reply = await api.ok(
        "wait_run", {"run_id": run["id"], "statuses": ["completed"], "timeout_seconds": 0.2}
    )
    assert reply["status"] == "queued"


@deadline(30)
async def test_list_runs_filters_and_pages(api: Api, workflow: str) -> None:
    """Runs come newest first, filtered by workflow and status, in pages linked by cursors."""
    await register(api, workflow)
    for quantity in range(5):
        await api.ok(
            "start_run",
            {"workflow": workflow, "version": "1.0", "input": {"id": "o", "quantity": quantity}},
        )
    claimed = await _start_and_claim(api, workflow)
    page = await api.ok("list_runs", {"workflow": workflow, "statuses": ["queued"], "limit": 3})
    assert [run["input"]["quantity"] for run in page["runs"]] == [4, 3, 2]
    rest = await api.ok(
        "list_runs",
        {"workflow": workflow, "statuses": ["queued"], "limit": 3, "cursor": page["next_cursor"]},
    )
    assert [run["input"]["quantity"] for run in rest["runs"]] == [1, 0]
    assert rest["next_cursor"] is None
    running = await api.ok("list_runs", {"workflow": workflow, "statuses": ["running"]})
    assert [run["id"] for run in running["runs"]] == [claimed["id"]]
    status, _ = await api.call("list_runs", {"limit": 0})
    assert status == 400


@deadline(30)
async def test_queued_runs_are_published_to_their_stream(
    api: Api, workflow: str, redis_url: str
) -> None:
    """The dispatcher puts each queued run on its version's stream, with its revision."""
    await register(api, workflow)
    stream = stream_for("default", workflow, "1.0", None)
    async with open_redis_streams(redis_url) as streams:
        await streams.ensure_group(stream, GROUP)
        run = (await api.ok("start_run", {"workflow": workflow, "version": "1.0", "input": ORDER}))[
            "run"
        ]
        async with streams.open_reader(GROUP, "t") as reader:
            [entry] = await reader.read([stream], count=10, block_ms=5000)
        assert QUEUED_RUN.decode(entry.payload).run_id == run["id"]
        await streams.delete(stream)


@deadline(30)
async def test_health_reports_ok(api: Api) -> None:
    """/healthz checks PostgreSQL and Redis."""
    response = await api.http.get(f"{api.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@deadline(30)
async def test_a_repeated_claim_by_the_holder_is_granted_and_fences_the_earlier_one(
    api: Api, workflow: str
) -> None:
    """A worker whose claim reply was lost claims again: granted with a new revision, and
    writes under the old revision are refused."""
    await register(api, workflow)
    await register(api, workflow, "w2")
    run = await _start_and_claim(api, workflow, worker="w1")
    again = await api.ok("claim_run", {"run_id": run["id"], "worker_id": "w1"})
    assert (again["type"], again["run"]["revision"]) == ("RunClaimed", 3)
    status, body = await api.call(
        "transition_run", {"run_id": run["id"], "revision": 2, "status": "completed"}
    )
    assert (status, body["error"]["code"]) == (409, "stale_revision")
    other = await api.ok("claim_run", {"run_id": run["id"], "worker_id": "w2"})
    assert other["type"] == "ClaimRejected"


class _Mine(Exception):
    """An application's own error, raised inside ``async with aiki.Client(...)``."""


@deadline(30)
async def test_errors_inside_the_client_block_come_out_as_raised_under_trio(
    api: Api, workflow: str
) -> None:
    """Under trio the client's session runs in a nursery; what the block raises (the
    server's refusal, an application's own error with its cause) comes out as it was
    raised, not in an exception group, so ``except`` clauses match as under asyncio."""
    await register(api, workflow)
    client = aiki.Client(api.url, api_key=api.keys["client"])

    async def start_bad() -> None:
        async with client:
            await client.start_run(StartRun(workflow=workflow, version="1.0", input={"id": 1}))

    with pytest.raises(aiki.ValidationError) as refused:
        await start_bad()
    assert "does not match" in str(refused.value)
    cause = KeyError("order")

    async def stop_inside() -> None:
        async with aiki.Client(api.url, api_key=api.keys["client"]) as other:
            await other.whoami()  # (the session is open: its nursery is running)
            raise _Mine("stop") from cause

    with pytest.raises(_Mine) as mine:
        await stop_inside()
    assert mine.value.__cause__ is cause
