"""An in-process server on a fresh schema, reached over real HTTP.

The server runs with authentication on (as it does by default): the fixture stores a key
of each role first; HTTP requests carry the admin key, worker sessions a worker key.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import typing
import uuid
from collections.abc import AsyncIterator

import attrs
import httpx
import orjson
import psycopg
import pytest
import trio

from aiki.errors import ERRORS_BY_CODE
from aiki.protocol import MAX_MESSAGE_BYTES, OPERATIONS, WORKERS, session_url
from aiki.server import ServerConfig, migrations, serve
from aiki.server.store import keys
from transport.migrations import apply_migrations_sync
from transport.postgres import Transaction
from transport.websocket import WebSocketClient, open_websocket

WORKER_OPERATIONS = frozenset(op.name for op in OPERATIONS if op.callers == WORKERS)


@attrs.define
class Api:
    """Posts operations to the server and returns (status, JSON).

    Worker operations go, as they must, over a worker's WebSocket session: one per worker
    ID, opened by ``register_worker``; a write about a run goes over the session of the
    worker that claimed it.
    """

    url: str
    http: httpx.AsyncClient
    nursery: trio.Nursery
    """Where each session's connection lives (the fixture's task owns them)."""
    keys: dict[str, str] = attrs.Factory(dict)
    """A key of each role (namespace ``default``; the admin key: every namespace)."""
    sessions: dict[str, WebSocketClient] = attrs.Factory(dict)
    holders: dict[str, str] = attrs.Factory(dict)
    """The worker that claimed each run, by run ID."""
    _ids: itertools.count[int] = attrs.Factory(itertools.count)

    async def call(self, operation: str, body: object) -> tuple[int, dict[str, object]]:
        if operation in WORKER_OPERATIONS:
            return await self._over_session(operation, body)
        response = await self.http.post(f"{self.url}/api/v1/{operation}", json=body)
        return response.status_code, response.json()

    async def ok(self, operation: str, body: object) -> dict[str, object]:
        status, reply = await self.call(operation, body)
        assert status == 200, reply
        return reply

    async def session(self, worker_id: str, role: str = "worker") -> WebSocketClient:
        """The session of ``worker_id`` (opened the first time, with a key of ``role``)."""
        if worker_id not in self.sessions:
            self.sessions[worker_id] = await self.nursery.start(self._hold_session, role)
        return self.sessions[worker_id]

    async def _hold_session(self, role: str, task_status: trio.TaskStatus[WebSocketClient]) -> None:
        async with open_websocket(
            session_url(self.url),
            max_message_bytes=MAX_MESSAGE_BYTES,
            headers=bearer(self.keys.get(role)),
        ) as websocket:
            task_status.started(websocket)
            await trio.sleep_forever()

    async def _over_session(self, operation: str, body: object) -> tuple[int, dict[str, object]]:
        assert isinstance(body, dict)
        run_id = body.get("run_id") or body.get("parent_id")
        worker_id = body.get("worker_id") or self.holders.get(str(run_id), "w1")
        websocket = await self.session(str(worker_id))
        request_id = next(self._ids)
        await websocket.send(
            orjson.dumps({"id": request_id, "op": operation, "body": body}).decode()
        )
        while True:
            frame = orjson.loads(await websocket.receive())
            if frame.get("id") == request_id:
                break
        if "error" in frame:
            error = frame["error"]
            return ERRORS_BY_CODE[error["code"]].http_status, {"error": error}
        reply = frame["ok"]
        if operation == "claim_run" and "run" in reply:
            self.holders[reply["run"]["id"]] = str(worker_id)
        return 200, reply


def bearer(key: str | None) -> dict[str, str]:
    """The headers presenting ``key``."""
    return {} if key is None else {"authorization": f"Bearer {key}"}


def store_keys(pg_url: str) -> dict[str, str]:
    """Store a key of each role in the database at ``pg_url``: {role: key}."""
    apply_migrations_sync(pg_url, migrations())
    made = {}
    with psycopg.connect(pg_url, autocommit=True) as connection:
        tx = Transaction(connection)
        for role in ("viewer", "client", "worker", "admin"):
            namespace = None if role == "admin" else "default"
            made[role], _ = keys.create(tx, role=role, namespace=namespace, name=f"test {role}",
                                        expires_at=None)  # fmt: skip
    return made


@contextlib.asynccontextmanager
async def open_api(pg_url: str, redis_url: str, **config: typing.Any) -> AsyncIterator[Api]:
    """Serve (with ``config`` overriding `ServerConfig` defaults) until the block ends."""
    stop = trio.Event()
    settings = ServerConfig(database_url=pg_url, redis_url=redis_url, port=0, pool_size=4,
                            **config)  # fmt: skip
    made = {} if settings.insecure_no_auth else store_keys(pg_url)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(functools.partial(serve, settings, shutdown_trigger=stop.wait))
        async with (
            httpx.AsyncClient(timeout=30, headers=bearer(made.get("admin"))) as http,
            trio.open_nursery() as sessions,
        ):
            yield Api(url, http, sessions, made)
            sessions.cancel_scope.cancel()
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
