"""Which connections a listener keeps: the decisions, without sockets or time.

A connection is *waiting* from the moment it is accepted until the application admits it
(its request proved a key: `transport.asgi.ADMIT`); then it is *admitted*. Waiting
connections cost their peer nothing but a socket, so they get a bounded share of the
listener: at most ``max_waiting`` of them, and at most ``max_waiting_per_address`` from
one peer address (an IPv6 peer's whole /64, which one host usually holds). A connection
that arrives over either share, or over the listener's cap, makes room by closing the
oldest waiting connection (of its own address, for the address's share) instead of
being refused: a client that holds a key is thus never locked out by keyless ones, which
can only push each other out. The one over the cap is refused only when every open
connection is admitted.

Among waiting connections, those *idle* (no request in progress: a head still dribbling
in, or nothing sent at all) are closed first; one whose request is being decided (its
head arrived: its key is being checked) is closed only when no idle one is left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

import attrs

C = TypeVar("C", bound=Hashable)


def address_group(host: str) -> str:
    """The peer address connections are counted by: an IPv4 address as it is, an IPv6
    address by its /64 (an IPv4-mapped one as the IPv4 address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@attrs.frozen
class Arrival(Generic[C]):
    """What to do about a connection that arrived."""

    refused: bool
    """Answer it 503 and close it (every open connection is admitted, at the cap)."""
    close: tuple[C, ...]
    """Waiting connections to close to make room for it (oldest first)."""


@attrs.define
class Admission(Generic[C]):
    """The listener's connections, waiting or admitted (see the module docstring).

    Args:
        max_connections: open connections at once.
        max_waiting: waiting connections at once.
        max_waiting_per_address: waiting connections of one address group at once.
    """

    max_connections: int = attrs.field(validator=attrs.validators.ge(1))
    max_waiting: int = attrs.field(validator=attrs.validators.ge(1))
    max_waiting_per_address: int = attrs.field(validator=attrs.validators.ge(1))
    _waiting: dict[C, str] = attrs.field(factory=dict, init=False)
    """Waiting connections, oldest first, with their address group."""
    _of_address: dict[str, dict[C, None]] = attrs.field(factory=dict, init=False)
    """Waiting connections of each address group, oldest first."""
    _busy: set[C] = attrs.field(factory=set, init=False)
    """Waiting connections whose request is being decided."""
    _admitted: set[C] = attrs.field(factory=set, init=False)

    @property
    def open(self) -> int:
        """Connections counted: waiting and admitted."""
        return len(self._waiting) + len(self._admitted)

    @property
    def waiting(self) -> int:
        """Connections not admitted yet."""
        return len(self._waiting)

    def is_waiting(self, connection: C) -> bool:
        """Whether ``connection`` is counted and not admitted yet."""
        return connection in self._waiting

    def arrive(self, connection: C, host: str) -> Arrival[C]:
        """Count ``connection`` (from peer address ``host``) as waiting, unless refused;
        the connections to close for it are no longer counted."""
        group = address_group(host)
        closing: list[C] = []
        if self.open >= self.max_connections:
            if not self._waiting:
                return Arrival(refused=True, close=())
            closing.append(self._drop_oldest(self._waiting))
        if len(self._waiting) >= self.max_waiting:
            closing.append(self._drop_oldest(self._waiting))
        if len(self._of_address.get(group, ())) >= self.max_waiting_per_address:
            closing.append(self._drop_oldest(self._of_address[group]))
        self._waiting[connection] = group
        self._of_address.setdefault(group, {})[connection] = None
        return Arrival(refused=False, close=tuple(closing))

    def busy(self, connection: C, busy: bool) -> None:
        """Note whether a waiting ``connection`` has a request being decided."""
        if busy and connection in self._waiting:
            self._busy.add(connection)
        else:
            self._busy.discard(connection)

    def admit(self, connection: C) -> None:
        """``connection`` proved a key: it is no longer waiting (and never closed to make
        room). Nothing if it is not counted, or admitted already."""
        if connection in self._waiting:
            self._forget_waiting(connection)
            self._admitted.add(connection)

    def leave(self, connection: C) -> None:
        """``connection`` closed: it is no longer counted."""
        self._admitted.discard(connection)
        if connection in self._waiting:
            self._forget_waiting(connection)

    def _drop_oldest(self, among: Mapping[C, object]) -> C:
        """Forget the oldest idle connection of ``among`` (a non-empty view of waiting
        ones), or the oldest one if none is idle; return it."""
        oldest = next((one for one in among if one not in self._busy), next(iter(among)))
        self._forget_waiting(oldest)
        return oldest

    def _forget_waiting(self, connection: C) -> None:
        group = self._waiting.pop(connection)
        same = self._of_address[group]
        del same[connection]
        if not same:
            del self._of_address[group]
        self._busy.discard(connection)
