"""Workflow versions: their identity is their payloads' structure, and they are immutable."""

from __future__ import annotations

from tests._deadline import deadline
from tests.aiki.test_schema_identity import _input_schema

from .conftest import Api


def _version(workflow: str, input_schema: object, events: object = None) -> dict[str, object]:
    return {"workflow": workflow, "version": "1", "input_schema": input_schema,
            "event_schemas": events or {}}  # fmt: skip


@deadline(30)
async def test_a_moved_input_class_registers_the_same_version(api: Api, workflow: str) -> None:
    """A worker restarted with its input class in another module serves the same version;
    one whose field changed type is refused, and nothing of it is stored."""
    before = _input_schema("shop.orders")
    await api.ok("register_worker", {"worker_id": "w1", "concurrency": 1,
                                     "versions": [_version(workflow, before)]})  # fmt: skip
    moved = _input_schema("shop.models.order")
    await api.ok("register_worker", {"worker_id": "w2", "concurrency": 1,
                                     "versions": [_version(workflow, moved)]})  # fmt: skip

    changed = _input_schema("shop.orders", quantity="str")
    status, reply = await api.call(
        "register_worker",
        {"worker_id": "w3", "concurrency": 1, "versions": [_version(workflow, changed)]},
    )
    assert status == 409, reply
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["code"] == "version_conflict"
    assert f"{workflow}@1" in str(error["message"])
    workers = await api.ok("list_workers", {})
    assert sorted(w["id"] for w in workers["workers"]) == ["w1", "w2"]  # type: ignore[index, union-attr]

    # A start is validated against the structure: the stored schema still takes an int.
    ok = {"id": "o1", "items": [{"sku": "a", "quantity": 2}]}
    await api.ok("start_run", {"workflow": workflow, "version": "1", "input": ok})
    bad = {"id": "o1", "items": [{"sku": "a", "quantity": "2"}]}
    status, reply = await api.call(
        "start_run", {"workflow": workflow, "version": "1", "input": bad}
    )
    assert status == 422, reply


@deadline(30)
async def test_event_schemas_are_compared_by_structure(api: Api, workflow: str) -> None:
    await api.ok("register_worker", {"worker_id": "w1", "concurrency": 1, "versions": [
        _version(workflow, None, {"paid": _input_schema("shop.a")})]})  # fmt: skip
    await api.ok("register_worker", {"worker_id": "w2", "concurrency": 1, "versions": [
        _version(workflow, None, {"paid": _input_schema("shop.b")})]})  # fmt: skip
    for events in ({"paid": _input_schema("shop.a", "float")},
                   {"paid": _input_schema("shop.a"), "refunded": {}}):  # fmt: skip
        status, reply = await api.call(
            "register_worker",
            {"worker_id": "w3", "concurrency": 1, "versions": [_version(workflow, None, events)]},
        )
        assert status == 409, reply
