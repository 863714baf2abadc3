"""Launch a local Redis Cluster of real ``redis-server`` nodes, for tests and benchmarks.

`LocalRedisCluster` starts ``masters`` nodes (``--cluster-enabled yes``, from the same
binary `LocalRedis` finds) on loopback, and on first start joins them the way
``redis-cli --cluster create`` does: a distinct config epoch per node, ``CLUSTER MEET``,
and the slots split into equal contiguous ranges, one per node (no replicas). It returns
once every node reports the cluster ``ok``. Nodes keep no data across a restart (unless
``persistent``) but keep their cluster configuration: `LocalRedisCluster.restart_node`
is a master that comes back empty, owning its slots again.

Like `transport.local_services`, the API is synchronous.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import redis

from ._errors import LocalServiceError
from ._redis_clients import SLOTS
from .local_services import READY_POLL_SECONDS, LocalRedis

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Self

BUS_PORT_OFFSET: Final = 10_000
"""A node's cluster bus listens on its port + 10000."""


def cluster_port() -> int:
    """A loopback port free a moment ago whose bus port (+10000) was free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 65_535 - BUS_PORT_OFFSET)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + BUS_PORT_OFFSET):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise LocalServiceError("no free pair of ports for a Redis Cluster node")


@attrs.define(eq=False)
class LocalRedisCluster:
    """A Redis Cluster of ``masters`` local nodes under ``data_dir`` (see the module)."""

    data_dir: Path
    masters: int = 3
    persistent: bool = False
    startup_seconds: float = 60.0
    nodes: list[LocalRedis] = attrs.field(init=False, factory=list)
    """The nodes, in slot order: node ``i`` owns the ``i``-th range of slots."""

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port>,...`` (every node a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> Self:
        """Start the nodes, join them into a cluster on first start, and wait until the
        cluster is ``ok`` on every node.

        Raises:
            LocalServiceError: a node did not start, or the cluster did not form within
                ``startup_seconds``.
        """
        if not self.nodes:
            self.nodes = [
                LocalRedis(self.data_dir / f"node-{index}", port=cluster_port(),
                           persistent=self.persistent, cluster_enabled=True)
                for index in range(self.masters)
            ]  # fmt: skip
        for node in self.nodes:
            node.start()
        if self._info(self.nodes[0]).get("cluster_slots_assigned") != str(SLOTS):
            self._join()
        self.wait_ok()
        return self

    def _join(self) -> None:
        for epoch, node in enumerate(self.nodes, start=1):
            with _client(node) as client:
                with contextlib.suppress(redis.ResponseError):  # set already
                    client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)  # type: ignore[no-untyped-call]
                if node is not self.nodes[0]:
                    client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)  # type: ignore[no-untyped-call]
                first, last = self.slot_range(epoch - 1)
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))  # type: ignore[no-untyped-call]

    def slot_range(self, index: int) -> tuple[int, int]:
        """The first and last slot node ``index`` owns (as joined here)."""
        return index * SLOTS // self.masters, (index + 1) * SLOTS // self.masters - 1

    def wait_ok(self, seconds: float | None = None) -> None:
        """Wait until every running node sees the whole cluster ``ok``.

        Raises:
            LocalServiceError: not within ``seconds`` (default ``startup_seconds``).
        """
        deadline = time.monotonic() + (self.startup_seconds if seconds is None else seconds)
        while True:
            states = [self._info(node) for node in self.nodes]
            if all(
                state.get("cluster_state") == "ok"
                and state.get("cluster_known_nodes") == str(self.masters)
                for state in states
            ):
                return
            if time.monotonic() > deadline:
                raise LocalServiceError(f"the Redis Cluster did not become ok: {states}")
            time.sleep(READY_POLL_SECONDS)

    def owner(self, slot: int) -> int:
        """The port of the node that serves ``slot`` now."""
        with _client(self.nodes[0]) as client:
            ranges = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            for first, last, master, *_replicas in ranges:
                if int(first) <= slot <= int(last):
                    return int(master[1])
        raise LocalServiceError(f"no node serves slot {slot}")

    def restart_node(self, index: int) -> None:
        """SIGKILL node ``index`` and start it again: empty unless ``persistent``, owning
        its slots again; returns once the cluster is ``ok``."""
        self.nodes[index].restart(kill=True)
        self.wait_ok()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def remove(self) -> None:
        """Stop every node and delete their data directories."""
        for node in self.nodes:
            node.remove()

    @staticmethod
    def _info(node: LocalRedis) -> dict[str, str]:
        with _client(node) as client:
            try:
                raw = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            except (redis.ConnectionError, redis.TimeoutError):
                return {}
        if isinstance(raw, dict):
            return {str(key): str(value) for key, value in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def _client(node: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5,
                         socket_connect_timeout=2)  # fmt: skip
    try:
        yield client
    finally:
        client.close()


def start_local_redis_cluster(data_dir: Path, *, masters: int = 3) -> LocalRedisCluster:
    """Start a local Redis Cluster of ``masters`` nodes in ``data_dir``, ready.

    Raises:
        LocalServiceError: a node did not start, or the cluster did not form.
    """
    return LocalRedisCluster(data_dir, masters=masters).start()
