"""Runs found by the reference ID people know, over HTTP: ``list_runs`` filters by it (of
any workflow unless one is named) and by a parent; a parent that is not a run ID is a
400 naming the field."""

from __future__ import annotations

from tests._deadline import deadline

from .conftest import ORDER_SCHEMA, Api, register


@deadline(30)
async def test_list_runs_finds_runs_by_reference_id(api: Api, workflow: str) -> None:
    await register(api, workflow)
    other = f"{workflow}-other"
    await api.ok("register_worker", {"worker_id": "w2", "concurrency": 1, "versions": [
        {"workflow": other, "version": "1.0", "input_schema": ORDER_SCHEMA}]})  # fmt: skip
    order = {"id": "o1", "quantity": 1}
    ids = {}
    for name, reference in ((workflow, "signup-alice"), (other, "signup-alice"),
                            (workflow, "signup-bob")):  # fmt: skip
        started = await api.ok("start_run", {"workflow": name, "version": "1.0", "input": order,
                                             "options": {"reference_id": reference}})  # fmt: skip
        run = started["run"]
        assert isinstance(run, dict)
        ids[name, reference] = run["id"]

    async def found(body: dict[str, object]) -> set[object]:
        page = await api.ok("list_runs", body)
        runs = page["runs"]
        assert isinstance(runs, list)
        assert all(run["reference_id"] == body["reference_id"] for run in runs)
        return {run["id"] for run in runs}

    assert await found({"reference_id": "signup-alice"}) == {
        ids[workflow, "signup-alice"],
        ids[other, "signup-alice"],
    }
    assert await found({"reference_id": "signup-alice", "workflow": other}) == {
        ids[other, "signup-alice"]
    }
    assert await found({"reference_id": "signup-carol"}) == set()

    status, reply = await api.call("list_runs", {"parent_id": "signup-alice"})
    assert status == 400, reply
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["errors"] == ["not a run ID @ $.parent_id"]
    children = await api.ok("list_runs", {"parent_id": ids[workflow, "signup-bob"]})
    assert children["runs"] == []
