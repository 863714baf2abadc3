"""Launch real PostgreSQL and Redis servers on loopback, for `aiki dev`, demos and tests.

Each service runs in a data directory on a free loopback port, in its own process
group, with its output in ``<data_dir>/<name>.log``. Besides start and stop, a service
supports what fault tests need: `LocalService.kill` (SIGKILL to the whole process
group), `LocalService.restart` on the same data directory and port, and for Redis,
no persistence at all, so a restart loses every key, as a failover without replication
would.

The API is synchronous (subprocesses, sockets): call it from plain code, a session
fixture, or ``trio.to_thread.run_sync``. Servers inherit the caller's signal mask, so
start them before blocking SIGINT/SIGTERM, or they will not hear `LocalService.stop`.

Example::

    with start_local_postgres(Path(".aiki/dev/postgres")) as pg, \\
         start_local_redis(Path(".aiki/dev/redis")) as redis:
        print(pg.url, redis.url)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

import attrs
import psycopg
import redis

from ._binaries import (
    ServiceUser,
    hand_over,
    postgres_bindir,
    reachable_copy,
    redis_server_binary,
    service_directory,
    service_user,
)
from ._errors import LocalServiceError

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

logger = logging.getLogger(__name__)

READY_POLL_SECONDS: Final = 0.05
"""Pause between readiness probes while a server starts (no server-side push exists)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define(eq=False)
class LocalService:
    """A server process this launcher owns. Subclasses say how to run and probe it."""

    kind: ClassVar[str] = "service"

    data_dir: Path
    port: int = attrs.field(factory=free_port)
    startup_seconds: float = 60.0
    _process: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None)

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self.data_dir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        """A client URL for the server."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the server and wait until it accepts connections.

        Raises:
            LocalServiceError: it did not start within ``startup_seconds``; the message
                carries the end of its log.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        argv, user = self._command()
        logger.info("starting %s on 127.0.0.1:%d (%s)", self.kind, self.port, self.data_dir)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill() reaches every backend
                user=user.uid,
                group=user.gid,
                extra_groups=[] if user.uid is not None else None,
                cwd="/",
            )
        deadline = time.monotonic() + self.startup_seconds
        while True:
            if self._process.poll() is not None:
                raise self._failure("exited during startup")
            if self._serving():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"did not accept connections within {self.startup_seconds} s")
            time.sleep(READY_POLL_SECONDS)
        self._after_ready()
        return self

    def stop(self, grace_seconds: float = 15.0) -> None:
        """Ask the server to shut down cleanly; SIGKILL it if it takes longer than the grace."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, self._stop_signal)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %s s; killing it", self.kind, grace_seconds)
            self.kill()
            return
        self._reap_group(process.pid)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server and every process it started (kill -9; nothing flushed),
        and wait until they are gone: its children too, which may have left its process
        group (PostgreSQL's backends each call ``setsid``) and would otherwise still hold
        its shared memory when it starts again."""
        process = self._process
        if process is None:
            return
        children = _children(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.wait()
        self._reap_group(process.pid)
        _wait_gone(children)
        self._process = None

    def restart(self, *, kill: bool = False) -> Self:
        """Stop (or kill) the server and start it again on the same data directory and port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def remove(self) -> None:
        """Stop the server and delete its data directory (and a relocated cluster)."""
        self.stop()
        for path in (
            sorted(self.data_dir.rglob("*"), reverse=True) if self.data_dir.exists() else []
        ):
            if path.is_symlink() and path.resolve().is_dir():
                shutil.rmtree(path.resolve(), ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses --------------------------------------------------------------------

    _stop_signal: ClassVar[int] = signal.SIGTERM

    def _prepare(self) -> None:
        """Create whatever the server needs on disk before its first start."""

    def _command(self) -> tuple[list[str], ServiceUser]:
        raise NotImplementedError

    def _serving(self) -> bool:
        """True once *this* server (not another one on the port) accepts connections."""
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Runs once the server accepts connections."""

    # -- helpers ---------------------------------------------------------------------------

    def _failure(self, what: str) -> LocalServiceError:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return LocalServiceError(f"{self.kind} on port {self.port} {what}; log tail:\n{tail}")

    @staticmethod
    def _reap_group(pgid: int, wait_seconds: float = 5.0) -> None:
        """Wait until the group's processes are gone (backends that outlive their parent)."""
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:  # only unreaped zombies of another parent remain
                return
            if _group_only_zombies(pgid):
                return
            time.sleep(READY_POLL_SECONDS)


def _stat(pid: str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None: gone)."""
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` now."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], wait_seconds: float = 10.0) -> None:
    """Wait until none of ``pids`` runs any more (a zombie counts as gone)."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if (fields := _stat(str(pid))) and fields[0] != "Z"]
        if not alive:
            return
        time.sleep(READY_POLL_SECONDS)
    logger.warning("processes %s outlived their server's kill by %s s", pids, wait_seconds)


def _group_only_zombies(pgid: int) -> bool:
    """True if every process left in group ``pgid`` is a zombie (exited, not yet reaped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return False
    return True


@attrs.define(eq=False)
class LocalPostgres(LocalService):
    """A PostgreSQL cluster in ``data_dir``, trust auth for user ``postgres`` on loopback.

    Args:
        database: created on first start; the `url` points at it.
        fsync: False trades crash safety of the *machine* for speed (a killed server
            still loses nothing); fine for tests, not for anything you keep.
        max_connections: the server's connection limit.
    """

    kind: ClassVar[str] = "postgres"
    _stop_signal: ClassVar[int] = signal.SIGINT  # "fast" shutdown: roll back and exit

    database: str = "aiki"
    fsync: bool = True
    max_connections: int = 200
    _bindir: Path | None = attrs.field(init=False, default=None)
    _cluster: Path | None = attrs.field(init=False, default=None)
    _user: ServiceUser | None = attrs.field(init=False, default=None)

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare(self) -> None:
        user = self._user = service_user()
        install = postgres_bindir().parent
        # Binaries find share/ and lib/ relative to bin/, so the whole install moves together;
        # pgserver's wheel also keeps libpq in site-packages/pgserver.libs (rpath-relative).
        if install.name == "pginstall" and (install.parent.parent / "pgserver.libs").is_dir():
            root = reachable_copy(
                install.parent.parent, user, ("pgserver/pginstall", "pgserver.libs")
            )
            self._bindir = root / "pgserver" / "pginstall" / "bin"
        else:
            self._bindir = reachable_copy(install, user) / "bin"
        cluster = self._cluster = service_directory(self.data_dir / "cluster", user)
        if not user.is_current:
            self.data_dir.chmod(self.data_dir.stat().st_mode | 0o111)
        if (cluster / "PG_VERSION").exists():
            return
        hand_over(cluster, user)
        cluster.chmod(0o700)
        result = subprocess.run(
            [
                str(self._bindir / "initdb"),
                "-D",
                str(cluster),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user=user.uid,
            group=user.gid,
            extra_groups=[] if user.uid is not None else None,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        if result.returncode != 0:
            raise LocalServiceError(f"initdb failed in {cluster}:\n{result.stdout}{result.stderr}")

    def _command(self) -> tuple[list[str], ServiceUser]:
        assert self._bindir is not None
        assert self._cluster is not None
        assert self._user is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",
        }
        argv = [str(self._bindir / "postgres"), "-D", str(self._cluster)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv, self._user

    def _serving(self) -> bool:
        assert self._cluster is not None
        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None and Path(str(row[0])).resolve() == self._cluster.resolve()

    def _after_ready(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')


@attrs.define(eq=False)
class LocalRedis(LocalService):
    """A redis-server in ``data_dir``; unless ``persistent``, a restart loses all data."""

    kind: ClassVar[str] = "redis"

    persistent: bool = False
    cluster_enabled: bool = False
    """Run as a Redis Cluster node (`LocalRedisCluster` joins the nodes); its cluster
    configuration (``nodes.conf``) survives restarts, its data only if ``persistent``."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> tuple[list[str], ServiceUser]:
        argv = [
            str(redis_server_binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
            "--save",
            "60 1" if self.persistent else "",
            "--appendonly",
            "yes" if self.persistent else "no",
        ]
        if self.cluster_enabled:
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000"]  # fmt: skip
        return argv, ServiceUser("current", None, None)

    def _serving(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)
        try:
            return bool(client.info("server").get("process_id") == self.pid)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()


def start_local_postgres(
    data_dir: Path, *, port: int | None = None, fsync: bool = True, database: str = "aiki"
) -> LocalPostgres:
    """Start (initialising on first use) a PostgreSQL in ``data_dir`` and return it, ready.

    Raises:
        LocalServiceError: no binaries, initdb failed, or the server did not come up.
    """
    service = LocalPostgres(data_dir, port=port or free_port(), fsync=fsync, database=database)
    return service.start()


def start_local_redis(
    data_dir: Path, *, port: int | None = None, persistent: bool = False
) -> LocalRedis:
    """Start a redis-server in ``data_dir`` and return it, ready.

    Raises:
        LocalServiceError: no binary, or the server did not come up.
    """
    return LocalRedis(data_dir, port=port or free_port(), persistent=persistent).start()


@attrs.define(eq=False)
class Services:
    """Where PostgreSQL and Redis are, and the local servers started for them, if any."""

    database_url: str
    redis_url: str
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None

    def stop(self) -> None:
        """Stop the local servers this object started (external ones are left alone)."""
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()


def services_from_env(
    data_dir: Path, *, prefix: str = "AIKI_", fsync: bool = True, database: str = "aiki"
) -> Services:
    """Use ``<prefix>DATABASE_URL`` / ``<prefix>REDIS_URL`` if set; start local servers otherwise.

    With ``prefix="AIKI_TEST_"`` this is what the test suite uses. Local servers keep their
    data under ``data_dir/postgres`` and ``data_dir/redis``; call `Services.stop` when done.

    Raises:
        LocalServiceError: a local server was needed and could not be started.
    """
    database_url = os.environ.get(f"{prefix}DATABASE_URL")
    redis_url = os.environ.get(f"{prefix}REDIS_URL")
    services = Services(database_url or "", redis_url or "")
    try:
        if not database_url:
            services.postgres = start_local_postgres(
                data_dir / "postgres", fsync=fsync, database=database
            )
            services.database_url = services.postgres.url
        if not redis_url:
            services.redis = start_local_redis(data_dir / "redis")
            services.redis_url = services.redis.url
    except BaseException:
        services.stop()
        raise
    return services
