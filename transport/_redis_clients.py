"""Redis clients from a URL: one Redis server, or a Redis Cluster named by seed nodes.

* ``redis://[user:password@]host:port/db`` and ``rediss://...`` (TLS) name one server,
  read as redis-py's ``Redis.from_url`` reads them (query options included).
* ``redis+cluster://[user:password@]host:port[,host:port...][?options]`` and
  ``rediss+cluster://...`` name a Redis Cluster by one or more of its nodes (seeds):
  redis-py's ``RedisCluster`` learns the rest from any seed that answers, follows
  ``MOVED``/``ASK`` redirections and refreshes its slot map after a failover. The
  credentials and options apply to every node; a cluster has database 0 only.

A command on a cluster names keys of one hash slot only (``CROSSSLOT`` otherwise): keys
that must be used together share a hash tag (``{...}``), and a blocking read is made per
slot, on a connection to the node that owns it (`node_url`).
"""

from __future__ import annotations

import urllib.parse
from typing import Final

import attrs
import redis
import redis.backoff
import redis.cluster
import redis.crc
import redis.retry

SLOTS: Final = redis.crc.REDIS_CLUSTER_HASH_SLOTS
"""Hash slots of a Redis Cluster (16384)."""

_CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_PLAIN_SCHEMES: Final = ("redis", "rediss", "unix")
_RETRY_ATTEMPTS: Final = 3
"""Attempts of one cluster command across redirections and failovers (each bounded by
the socket timeout): a cluster mid-failover answers the caller within a few timeouts."""


def hash_slot(key: str) -> int:
    """The cluster hash slot of ``key`` (of its ``{tag}`` if it has one)."""
    return int(redis.crc.key_slot(key.encode()))


@attrs.frozen
class RedisTarget:
    """Where Redis is, parsed from a URL (`parse_redis_url`)."""

    url: str
    """The URL as given."""
    cluster: bool
    """A Redis Cluster (named by seed nodes) rather than one server."""
    seeds: tuple[tuple[str, int], ...]
    """The cluster's seed nodes (a single server: itself)."""
    _template: urllib.parse.SplitResult
    """A plain ``redis://`` URL of the first seed, with the credentials and options."""

    def node_url(self, host: str, port: int) -> str:
        """A plain URL of one node, with this target's credentials and options."""
        credentials, _, _ = self._template.netloc.rpartition("@")
        where = f"[{host}]" if ":" in host else host
        netloc = f"{credentials}@{where}:{port}" if credentials else f"{where}:{port}"
        return self._template._replace(netloc=netloc).geturl()

    def client(self, *, socket_timeout: float, **options: object) -> redis.Redis:
        """A client with a connection pool: one server's, or the cluster's (which routes
        each command to the node owning its keys' slot)."""
        common: dict[str, object] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(socket_timeout, 5.0),
            "health_check_interval": 0,
            **options,
        }
        if not self.cluster:
            return redis.Redis.from_url(self.url, **common)
        common.pop("single_connection_client", None)
        first, *others = self.seeds
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in others]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(  # type: ignore[return-value]
            url=self.node_url(*first),
            startup_nodes=nodes,
            retry=redis.retry.Retry(
                redis.backoff.ExponentialWithJitterBackoff(base=0.05, cap=1.0), _RETRY_ATTEMPTS
            ),
            **common,  # type: ignore[arg-type]
        )


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL (see the module's docstring for the two forms).

    Raises:
        ValueError: not a Redis URL, no seed node, a seed without a port, or a database
            other than 0 for a cluster; the message names what is wrong.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _PLAIN_SCHEMES:
        host = parts.hostname or "localhost"
        return RedisTarget(url, False, ((host, parts.port or 6379),), parts)
    if scheme not in _CLUSTER_SCHEMES:
        raise ValueError(
            f"redis URL {_redacted(parts)!r}: the scheme must be redis://, rediss://, "
            "redis+cluster:// or rediss+cluster://"
        )
    credentials, _, hosts = parts.netloc.rpartition("@")
    seeds = tuple(_seed(item, parts) for item in hosts.split(",") if item.strip())
    if not seeds:
        raise ValueError(f"redis URL {_redacted(parts)!r}: name at least one cluster node")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"redis URL {_redacted(parts)!r}: a Redis Cluster has database 0 only")
    host, port = seeds[0]
    where = f"[{host}]" if ":" in host else host
    netloc = f"{credentials}@{where}:{port}" if credentials else f"{where}:{port}"
    template = parts._replace(scheme=_CLUSTER_SCHEMES[scheme], netloc=netloc, path="")
    return RedisTarget(url, True, seeds, template)


def _seed(item: str, parts: urllib.parse.SplitResult) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"redis URL {_redacted(parts)!r}: cluster node {item.strip()!r} must be host:port"
        )
    return host.strip("[]"), int(port)


def _redacted(parts: urllib.parse.SplitResult) -> str:
    """The URL without its password (for error messages)."""
    credentials, at, hosts = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    netloc = f"{user}:***@{hosts}" if at and ":" in credentials else parts.netloc
    return parts._replace(netloc=netloc).geturl()
