"""An in-process server on a fresh schema, reached over real HTTP."""

from __future__ import annotations

import contextlib
import functools
import typing
import uuid
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
import trio

from aiki.server import ServerConfig, serve


@attrs.define
class Api:
    """Posts operations to the server and returns (status, JSON)."""

    url: str
    http: httpx.AsyncClient

    async def call(self, operation: str, body: object) -> tuple[int, dict[str, object]]:
        response = await self.http.post(f"{self.url}/api/v1/{operation}", json=body)
        return response.status_code, response.json()

    async def ok(self, operation: str, body: object) -> dict[str, object]:
        status, reply = await self.call(operation, body)
        assert status == 200, reply
        return reply


@contextlib.asynccontextmanager
async def open_api(pg_url: str, redis_url: str, **config: typing.Any) -> AsyncIterator[Api]:
    """Serve (with ``config`` overriding `ServerConfig` defaults) until the block ends."""
    stop = trio.Event()
    settings = ServerConfig(database_url=pg_url, redis_url=redis_url, port=0, pool_size=4,
                            **config)  # fmt: skip
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve, settings, shutdown_trigger=stop.wait))
        async with httpx.AsyncClient(timeout=30) as http:
            yield Api(url, http)
        stop.set()


@pytest.fixture
async def api(pg_url: str, redis_url: str) -> AsyncIterator[Api]:
    async with open_api(pg_url, redis_url) as found:
        yield found


@pytest.fixture
def workflow() -> str:
    """A workflow name no other test uses (streams are shared in Redis)."""
    return f"orders-{uuid.uuid4().hex[:8]}"


ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"id": {"type": "string"}, "quantity": {"type": "integer"}},
    "required": ["id", "quantity"],
    "additionalProperties": False,
}


async def register(api: Api, workflow: str, worker_id: str = "w1") -> None:
    """Register ``workflow``@1.0 with the order schema."""
    await api.ok("register_worker", {
        "worker_id": worker_id, "concurrency": 4,
        "versions": [{"workflow": workflow, "version": "1.0", "input_schema": ORDER_SCHEMA}],
    })  # fmt: skip
