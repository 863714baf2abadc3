"""Input from peers that would stall or confuse the server is refused where it arrives."""

from __future__ import annotations

import time

import trio

from tests._deadline import deadline

from .conftest import Api, register

ORDER = {"id": "o-1", "quantity": 2}
EVIL_PATTERN = "^(a+)+$"
EVIL_INPUT = "a" * 27 + "!"  # 8 s of backtracking for Python's re with the pattern above


@deadline(60)
async def test_a_backtracking_pattern_cannot_stall_other_clients(api: Api, workflow: str) -> None:
    """A worker registering a schema with a catastrophic regular expression is refused
    (naming the keyword and where it is), so the evil input has nothing to run against:
    meanwhile another client's get_run answers within 100 ms every time."""
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
    slowest = 0.0

    async def bystander() -> None:
        nonlocal slowest
        for _ in range(50):
            started = time.perf_counter()
            await api.ok("get_run", {"run_id": run["run"]["id"]})  # type: ignore[index]
            slowest = max(slowest, time.perf_counter() - started)

    async def attacker() -> None:
        for _ in range(20):
            status, _ = await api.call("start_run", {
                "workflow": f"{workflow}-evil", "version": "1", "input": EVIL_INPUT})  # fmt: skip
            assert status == 404  # never registered: nothing validates the input

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bystander)
        nursery.start_soon(attacker)
    assert slowest < 0.1, f"a get_run took {slowest * 1000:.0f} ms"
