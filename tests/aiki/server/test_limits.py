"""Concurrency limits at the server: declared by a registration, taken at start from the
input, enforced by the gate (runs over the limit wait queued, unclaimable, until a slot
frees), with clear errors for what cannot be a limit or a key."""

from __future__ import annotations

import functools

import orjson
import psycopg
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import aiki
from aiki.protocol import ConcurrencyLimit, LimitKeyError, StartRun, limit_key
from tests._deadline import deadline
from tests._waiting import wait_until

from .conftest import ORDER_SCHEMA, Api, open_api, store_keys

LIMITED = [
    {"name": "per-order", "key": "id", "per_key": 2},
    {"name": "warehouse", "per_key": 3, "holds": "executing"},
]


async def _register(api: Api, workflow: str, limits: object, worker_id: str = "w1") -> None:
    await api.ok("register_worker", {
        "worker_id": worker_id, "concurrency": 8,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA,
                      "limits": limits}],
    })  # fmt: skip


async def _start(api: Api, workflow: str, order: str) -> str:
    body = {"workflow": workflow, "version": "1.0", "input": {"id": order, "quantity": 1}}
    run = (await api.ok("start_run", body))["run"]
    assert run["status"] == "queued"
    return str(run["id"])


async def _admitted(api: Api, run_ids: list[str]) -> set[str]:
    found = set()
    for run_id in run_ids:
        run = await api.ok("get_run", {"run_id": run_id})
        if run["status"] != "queued" or run["gated_at"] is None:
            found.add(run_id)
    return found


@deadline(40)
async def test_runs_over_a_limit_wait_at_the_gate_until_a_slot_frees(
    api: Api, workflow: str
) -> None:
    """Per order at most 2, over all orders at most 3: of 4 runs of order A and 2 of B,
    3 go (2 of A, the first; then 1 of B); the others wait queued, and a worker cannot
    claim them. Each run that completes lets exactly the next one through."""
    await _register(api, workflow, LIMITED)
    a = [await _start(api, workflow, "A") for _ in range(4)]
    b = [await _start(api, workflow, "B") for _ in range(2)]

    async def admitted(count: int) -> bool:
        return len(await _admitted(api, a + b)) == count

    with trio.fail_after(10):
        await wait_until(lambda: admitted(3))
    through = await _admitted(api, a + b)
    assert through == {a[0], a[1], b[0]}
    for waiting in [a[2], a[3], b[1]]:
        refused = await api.ok("claim_run", {"run_id": waiting, "worker_id": "w1"})
        assert refused["type"] == "ClaimRejected"
        run = await api.ok("get_run", {"run_id": waiting})
        assert run["gated_at"] is not None
    why = (await api.ok("describe_run", {"run_id": a[2]}))["gate"]
    assert "waiting for limit 'per-order' (key A: 2 of 2 running)" in why["summary"], why
    assert "waiting for limit 'warehouse' (3 of 3 running)" in why["summary"]
    exposition = (await api.http.get(f"{api.url}/metrics")).text
    assert 'aiki_limit_holding{limit="per-order",namespace="default"} 3.0' in exposition
    assert 'aiki_limit_waiting{limit="warehouse",namespace="default"} 3.0' in exposition
    assert 'aiki_gate_waiting{namespace="default",priority="2"} 3.0' in exposition

    claimed = await api.ok("claim_run", {"run_id": a[0], "worker_id": "w1"})
    revision = claimed["run"]["revision"]
    await api.ok("transition_run", {"run_id": a[0], "revision": revision, "status": "completed"})
    with trio.fail_after(10):
        await wait_until(lambda: admitted(4))
    assert await _admitted(api, a + b) == {a[0], a[1], a[2], b[0]}  # A's next, in order


@deadline(30)
async def test_what_cannot_be_a_limit_or_a_key_is_refused_naming_the_field(
    api: Api, workflow: str
) -> None:
    status, body = await api.call("register_worker", {
        "worker_id": "w1", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0",
                      "limits": [{"name": "x", "key": "a..b", "per_key": 1}]}],
    })  # fmt: skip
    assert status == 400, body
    assert any("$.versions[0].limits[0].key" in error for error in body["error"]["errors"])
    status, body = await api.call("register_worker", {
        "worker_id": "w1", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0",
                      "limits": [{"name": "x", "per_key": 0}]}],
    })  # fmt: skip
    assert status == 400, body
    assert any("$.versions[0].limits[0].per_key" in error for error in body["error"]["errors"])

    await _register(api, workflow, [{"name": "per-quantity", "key": "quantity", "per_key": 1}])
    status, body = await api.call(
        "start_run", {"workflow": workflow, "version": "1.0", "input": {"id": "x"}}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
    # A version registered again must name the same limits.
    status, body = await api.call("register_worker", {
        "worker_id": "w2", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA,
                      "limits": []}],
    })  # fmt: skip
    assert (status, body["error"]["code"]) == (409, "version_conflict"), body


@deadline(30)
async def test_a_key_the_input_lacks_is_refused_at_start(api: Api, workflow: str) -> None:
    await api.ok("register_worker", {
        "worker_id": "w1", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0",
                      "limits": [{"name": "per-customer", "key": "customer.id",
                                  "per_key": 1}]}],
    })  # fmt: skip
    status, body = await api.call(
        "start_run", {"workflow": workflow, "version": "1.0", "input": {"customer": {}}}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
    assert "$.customer.id" in body["error"]["message"]
    assert body["error"]["errors"][0].endswith("@ $.input.customer.id")
    ok = await api.ok(
        "start_run", {"workflow": workflow, "version": "1.0", "input": {"customer": {"id": 7}}}
    )
    assert ok["run"]["status"] == "queued"


_SCALARS = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=20),
    st.integers(-(10**12), 10**12), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "0", "1"]), inner, max_size=3),
    ),
    max_leaves=12,
)
_PATHS = st.lists(st.sampled_from(["a", "b", "0", "1"]), min_size=1, max_size=4).map(".".join)


def test_the_servers_key_in_sql_is_the_key_the_start_checked(pg_url: str) -> None:
    """Wherever `limit_key` (which checks every start, child start and schedule) finds
    a key, ``aiki_limit_key`` (which makes the slots of the runs) finds the same one;
    where it refuses, no run is made, and where the path leads nowhere both agree."""
    store_keys(pg_url)  # (the migrations)
    with psycopg.connect(pg_url, autocommit=True) as connection:

        @settings(max_examples=300, deadline=None)
        @given(_DOCS, _PATHS)
        def agree(doc: object, path: str) -> None:
            try:
                expected: str | None = limit_key(
                    ConcurrencyLimit(name="x", key=path, per_key=1), doc
                )
            except LimitKeyError as refused:
                expected = None
                missing = "does not have" in str(refused)
            row = connection.execute(
                "SELECT aiki_limit_key(%s::jsonb, %s)", (orjson.dumps(doc).decode(), path)
            ).fetchone()
            assert row is not None
            if expected is not None or missing:
                assert row[0] == expected

        agree()


async def _start_with(api: Api, workflow: str, **options: object) -> dict[str, object]:
    body = {"workflow": workflow, "version": "1.0", "input": {"id": "o", "quantity": 1},
            "options": options}  # fmt: skip
    return (await api.ok("start_run", body))["run"]  # type: ignore[no-any-return]


async def _complete(api: Api, run_id: str) -> None:
    claimed = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
    assert claimed["type"] == "RunClaimed", claimed
    revision = claimed["run"]["revision"]
    await api.ok("transition_run", {"run_id": run_id, "revision": revision, "status": "completed"})


@deadline(60)
async def test_when_workers_are_saturated_runs_wait_and_go_by_priority_then_age(
    pg_url: str, redis_url: str, workflow: str
) -> None:
    """One worker with one slot, and no run sent ahead of free slots: once it is busy,
    starts wait at the gate (no limits involved), and each slot that frees goes to the
    waiting run of the highest priority, the earliest first within a level."""
    async with open_api(pg_url, redis_url, dispatch_ahead=0) as api:
        await _saturated(api, workflow)


async def _saturated(api: Api, workflow: str) -> None:
    await api.ok("register_worker", {
        "worker_id": "w1", "concurrency": 1,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA}],
    })  # fmt: skip
    first = await _start_with(api, workflow)
    await _complete_when_sent(api, str(first["id"]), complete=False)
    # Until the gate has seen the worker busy, starts may still go straight to the queue:
    # probes (the lowest priority) until one waits; the ones that went are run through.
    straight: list[str] = []

    async def probe_waits() -> bool:
        run = await _start_with(api, workflow, priority=0)
        if run["gated_at"] is None:
            straight.append(str(run["id"]))
            return False
        return True

    with trio.fail_after(10):
        await wait_until(probe_waits)
    early = await _start_with(api, workflow)
    late = await _start_with(api, workflow)
    urgent = await _start_with(api, workflow, priority=4)
    assert (early["priority"], urgent["priority"]) == (2, 4)
    assert all(run["gated_at"] is not None for run in (early, late, urgent))
    run_ids = [str(run["id"]) for run in (early, late, urgent)]

    # The busy run ends, and the probes that went straight: a slot is free.
    revision = (await api.ok("get_run", {"run_id": first["id"]}))["revision"]
    await api.ok("transition_run",
                 {"run_id": first["id"], "revision": revision, "status": "completed"})  # fmt: skip
    for run_id in straight:
        await _complete(api, run_id)
    for expected in (urgent, early, late):
        with trio.fail_after(10):
            await wait_until(functools.partial(_one_admitted, api, run_ids, str(expected["id"])))
        await _complete(api, str(expected["id"]))
        run_ids.remove(str(expected["id"]))


async def _one_admitted(api: Api, run_ids: list[str], expected: str) -> bool:
    admitted = await _admitted(api, run_ids)
    assert admitted <= {expected}, f"admitted {admitted}, expected {expected} alone"
    return admitted == {expected}


async def _complete_when_sent(api: Api, run_id: str, *, complete: bool = True) -> None:
    async def claimed() -> bool:
        reply = await api.ok("claim_run", {"run_id": run_id, "worker_id": "w1"})
        return reply["type"] == "RunClaimed"

    with trio.fail_after(10):
        await wait_until(claimed)
    if complete:
        revision = (await api.ok("get_run", {"run_id": run_id}))["revision"]
        await api.ok("transition_run",
                     {"run_id": run_id, "revision": revision, "status": "completed"})  # fmt: skip


async def _wait_admitted(api: Api, run_id: str) -> None:
    async def admitted() -> bool:
        return bool(await _admitted(api, [run_id]))

    with trio.fail_after(10):
        await wait_until(admitted)


@deadline(40)
async def test_a_full_limit_that_refuses_refuses_the_start_naming_the_run_and_stores_nothing(
    api: Api, workflow: str
) -> None:
    await _register(api, workflow, [{"name": "one-export", "key": "id", "per_key": 1,
                                     "on_limit": "refuse"}])  # fmt: skip
    first = await _start(api, workflow, "x")
    await _wait_admitted(api, first)
    body = {"workflow": workflow, "version": "1.0", "input": {"id": "x", "quantity": 2}}
    status, refused = await api.call("start_run", body)
    assert (status, refused["error"]["code"]) == (409, "limit_reached"), refused
    assert refused["error"]["run_id"] == first
    assert "limit 'one-export' (key x) has 1 of 1 runs" in refused["error"]["message"]
    listed = await api.ok("list_runs", {"workflow": workflow})
    assert [run["id"] for run in listed["runs"]] == [first]  # nothing stored
    other = await _start(api, workflow, "y")  # another key
    await _wait_admitted(api, other)
    async with aiki.Client(api.url, api_key=api.keys["client"], session=False) as client:
        with pytest.raises(aiki.LimitReachedError) as caught:
            await client.start_run(StartRun(workflow=workflow, version="1.0",
                                            input={"id": "x", "quantity": 3}))  # fmt: skip
        assert caught.value.run_id == first
    await _complete(api, first)
    again = await _start(api, workflow, "x")  # the slot is free again
    await _wait_admitted(api, again)


@deadline(40)
async def test_a_full_limit_that_cancels_cancels_the_oldest_run_of_the_key_for_the_new_one(
    api: Api, workflow: str
) -> None:
    await _register(api, workflow, [{"name": "latest-sync", "key": "id", "per_key": 1,
                                     "on_limit": "cancel_running"}])  # fmt: skip
    first = await _start(api, workflow, "x")
    await _wait_admitted(api, first)
    claimed = await api.ok("claim_run", {"run_id": first, "worker_id": "w1"})
    assert claimed["type"] == "RunClaimed"
    latest = await _start(api, workflow, "x")
    cancelled = await api.ok("get_run", {"run_id": first})
    assert cancelled["status"] == "cancelled"
    assert f"cancelled for run {latest}" in str(cancelled["stop_reason"])
    await _wait_admitted(api, latest)  # the slot the cancelled run held is its


@deadline(30)
async def test_a_child_takes_its_parents_priority_and_fairness_key_unless_it_names_its_own(
    api: Api, workflow: str
) -> None:
    await _register(api, workflow, [])
    parent = await _start_with(api, workflow, priority=4, fairness_key="acme",
                               fairness_weight=3)  # fmt: skip
    await _wait_admitted(api, str(parent["id"]))
    claimed = await api.ok("claim_run", {"run_id": parent["id"], "worker_id": "w1"})
    revision = claimed["run"]["revision"]
    child_input = {"id": "c", "quantity": 1}

    async def child(seq: int, options: dict[str, object]) -> dict[str, object]:
        started = await api.ok("start_child", {
            "parent_id": parent["id"], "revision": revision, "address": "child:c", "seq": seq,
            "workflow": workflow, "version": "1.0", "input": child_input, "options": options,
        })  # fmt: skip
        return started["run"]  # type: ignore[no-any-return]

    inherited = await child(0, {})
    assert (inherited["priority"], inherited["fairness_key"], inherited["fairness_weight"]) == (
        4, "acme", 3)  # fmt: skip
    own = await child(1, {"priority": 0, "fairness_key": "other"})
    assert (own["priority"], own["fairness_key"], own["fairness_weight"]) == (0, "other", 3)
