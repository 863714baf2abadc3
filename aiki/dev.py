"""A whole Aiki in one process, for development, examples and your own tests.

::

    async with aiki.dev.open_dev(worker) as env:
        handle = await process_order.start(env.client, order)
        print(await handle.wait_for_status("completed"))

`open_dev` starts PostgreSQL and Redis with the local launcher (unless
``AIKI_DATABASE_URL`` / ``AIKI_REDIS_URL`` name existing ones), a server on a free port
(loopback only, without authentication: no keys to handle) and a worker serving
``worker``, and stops everything at the end of the block: the worker first (so runs in
progress finish), then the server, then the databases. The server and the worker are
separate supervision trees that share only the process.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import trio

from transport.local_services import Services, services_from_env

from .client import Client
from .server import ServerConfig, serve
from .worker import Worker, WorkerConfig, run_worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


STOP_SERVICES_SECONDS: Final = 60.0
"""How long stopping the local PostgreSQL and Redis may take at the end."""


@attrs.frozen
class DevEnvironment:
    """What `open_dev` started."""

    url: str
    """The server's base URL."""
    client: Client
    services: Services
    worker_id: str


@asynccontextmanager
async def open_dev(
    worker: Worker,
    *,
    data_dir: Path | None = None,
    port: int = 0,
    shutdown_grace_seconds: float = 10.0,
) -> AsyncIterator[DevEnvironment]:
    """Run databases, a server and a worker for the duration of the block.

    Args:
        worker: what the worker serves.
        data_dir: where local databases keep their data (default: a temporary directory
            removed afterwards; give one to keep runs across sessions).
        port: the server's port (0: any free one).
        shutdown_grace_seconds: how long runs in progress may finish at the end.
    """
    base = data_dir or Path(tempfile.mkdtemp(prefix="aiki-dev-"))
    services = await trio.to_thread.run_sync(functools.partial(services_from_env, base))
    try:
        async with trio.open_nursery() as servers:
            stop_server = trio.Event()
            url = await servers.start(
                functools.partial(
                    serve,
                    # One machine, loopback only: no keys to handle (the server says so).
                    ServerConfig(
                        database_url=services.database_url,
                        redis_url=services.redis_url,
                        port=port,
                        insecure_no_auth=True,
                    ),
                    shutdown_trigger=stop_server.wait,
                )
            )
            async with trio.open_nursery() as workers:
                stop_worker = trio.Event()
                config = WorkerConfig(
                    server_url=url,
                    redis_url=services.redis_url,
                    shutdown_grace_seconds=shutdown_grace_seconds,
                )
                worker_id = await workers.start(
                    functools.partial(run_worker, worker, config, shutdown_trigger=stop_worker.wait)
                )
                async with Client(url) as client:
                    yield DevEnvironment(
                        url=url, client=client, services=services, worker_id=worker_id
                    )
                stop_worker.set()
            stop_server.set()
    finally:
        with trio.move_on_after(STOP_SERVICES_SECONDS, shield=True):
            for service in (services.redis, services.postgres):
                if service is None:
                    continue
                if data_dir is None:
                    await trio.to_thread.run_sync(service.remove)
                else:
                    await trio.to_thread.run_sync(service.stop)
        if data_dir is None:
            shutil.rmtree(base, ignore_errors=True)
