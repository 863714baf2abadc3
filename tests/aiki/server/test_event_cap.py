"""A run takes at most ``max_events_per_run`` events: a new one past it is refused with a
clear 409 and nothing is stored; a duplicate of one it took is still answered as
delivered (webhooks retry), and other runs are not affected."""

from __future__ import annotations

import psycopg

from tests._deadline import deadline

from .conftest import ORDER_SCHEMA, open_api

ORDER = {"id": "o-1", "quantity": 2}


@deadline(30)
async def test_a_run_over_its_event_cap_refuses_new_events_and_stores_nothing(
    pg_url: str, redis_url: str, workflow: str
) -> None:
    async with open_api(pg_url, redis_url, max_events_per_run=3) as api:
        await api.ok("register_worker", {"worker_id": "w1", "versions": [{
            "workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA,
            "event_schemas": {"go": {}, "stop": {}}}]})  # fmt: skip
        runs = []
        for _ in range(2):
            started = await api.ok("start_run", {"workflow": workflow, "version": "1.0",
                                                 "input": ORDER})  # fmt: skip
            runs.append(str(started["run"]["id"]))  # type: ignore[index]
        full, other = runs
        for index, name in enumerate(["go", "stop", "go"]):
            await api.ok("send_event", {"run_id": full, "name": name, "payload": index,
                                        "reference_id": f"hook-{index}"})  # fmt: skip
        past = {"run_id": full, "name": "go", "payload": 9, "reference_id": "hook-9"}
        status, refused = await api.call("send_event", past)
        assert status == 409, refused
        assert "3 events" in refused["error"]["message"]  # type: ignore[index]
        assert "--max-events-per-run" in refused["error"]["message"]  # type: ignore[index]
        again = await api.ok("send_event", {"run_id": full, "name": "go", "payload": 0,
                                             "reference_id": "hook-0"})  # fmt: skip
        assert (again["duplicate"], again["seq"]) == (True, 1)
        assert (await api.ok("send_event", {"run_id": other, "name": "go"}))["seq"] == 1
    with psycopg.connect(pg_url) as connection:
        stored = connection.execute(
            "SELECT r.id::text, r.events_received, count(e.seq) FROM aiki_runs r"
            " LEFT JOIN aiki_events e ON e.run_id = r.id GROUP BY r.id"
        ).fetchall()
    assert sorted(stored) == sorted([(full, 3, 3), (other, 1, 1)])
