"""Operations: typed requests and replies, each declared once with who may call it.

A request class names its reply type through its base, so a caller gets the reply's
type without a cast::

    @attrs.frozen(kw_only=True)
    class StartRun(Request[RunStarted]):
        ...

    START_RUN: Final = declare("start_run", StartRun, callers=CLIENTS)

    started = await client.call(StartRun(...))      # a RunStarted

The protocol module of each concept declares its operations; `Registry` collects them
(`aiki.protocol.OPERATIONS`), and every carrier finds an operation there by name (the
HTTP path, a session frame's ``op``) or by request type. The server binds exactly one
handler to each.
"""

from __future__ import annotations

import typing
from typing import Any, Final, Generic, Literal, TypeVar

import attrs

from ..wire import WireCodec

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

Q = TypeVar("Q")
P = TypeVar("P")
R_co = TypeVar("R_co", covariant=True)

Role = Literal["viewer", "client", "worker", "admin"]
"""Who may call an operation:

- ``viewer``: reads runs, schedules and workers, and watches them;
- ``client``: also starts runs, sends events, controls runs and schedules;
- ``worker``: the operations of a worker executing runs;
- ``admin``: everything a client may, and the administration of the server.
"""

READERS: Final[frozenset[Role]] = frozenset({"viewer", "client", "admin"})
CLIENTS: Final[frozenset[Role]] = frozenset({"client", "admin"})
WORKERS: Final[frozenset[Role]] = frozenset({"worker"})
ADMINS: Final[frozenset[Role]] = frozenset({"admin"})
ANYONE: Final[frozenset[Role]] = frozenset({"viewer", "client", "worker", "admin"})


class Request(Generic[R_co]):
    """Base of every operation's request; ``R_co`` is the type of its reply."""

    __slots__ = ()


def reply_type_of(request_type: type) -> object:
    """The reply type a request class declares through its `Request` base."""
    for base in getattr(request_type, "__orig_bases__", ()):
        if typing.get_origin(base) is Request:
            return typing.get_args(base)[0]
    raise TypeError(f"{request_type.__name__} does not derive from Request[...]")


@attrs.frozen(eq=False)
class Operation(Generic[Q, P]):
    """One operation: its name, request and reply types with their codecs, and callers.

    Attributes:
        name: as in ``POST /api/v1/<name>`` and a session frame's ``op``.
        callers: the roles that may call it.
        session_only: it needs a WebSocket session (its replies or effects are pushes).
    """

    name: str
    request_type: type[Q]
    reply_type: object
    callers: frozenset[Role]
    session_only: bool
    request: WireCodec[Q] = attrs.field(repr=False)
    reply: WireCodec[P] = attrs.field(repr=False)

    @property
    def summary(self) -> str:
        """The first line of the request's docstring."""
        return (self.request_type.__doc__ or "").strip().splitlines()[0]


def declare(
    name: str,
    request_type: type[Request[P]],
    *,
    callers: Iterable[Role],
    session_only: bool = False,
    also: tuple[object, ...] = (),
) -> Operation[Request[P], P]:
    """Declare the operation ``name`` for ``request_type`` (its reply type comes from the
    class's `Request` base).

    Args:
        also: unions nested in the reply, to be tagged on the wire.
    """
    reply_type = reply_type_of(request_type)
    return Operation(
        name,
        request_type,
        reply_type,
        frozenset(callers),
        session_only,
        WireCodec[Request[P]](request_type),
        WireCodec[P](reply_type, also=also),
    )


class Registry:
    """Every operation, by name and by request type.

    Raises:
        ValueError: two operations share a name or a request type.
    """

    def __init__(self, *groups: Iterable[Operation[Any, Any]]) -> None:
        by_name: dict[str, Operation[Any, Any]] = {}
        by_type: dict[type, Operation[Any, Any]] = {}
        for group in groups:
            for operation in group:
                if operation.name in by_name:
                    raise ValueError(f"operation {operation.name!r} is declared twice")
                if operation.request_type in by_type:
                    raise ValueError(f"{operation.request_type.__name__} serves two operations")
                by_name[operation.name] = operation
                by_type[operation.request_type] = operation
        self.by_name: Mapping[str, Operation[Any, Any]] = by_name
        self._by_type = by_type

    def __iter__(self) -> typing.Iterator[Operation[Any, Any]]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def named(self, name: str) -> Operation[Any, Any] | None:
        """The operation called ``name``, if there is one."""
        return self.by_name.get(name)

    def of(self, request: Request[P]) -> Operation[Request[P], P]:
        """The operation ``request`` belongs to."""
        return self._by_type[type(request)]
