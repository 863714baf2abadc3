"""Wire types of API keys and of who is calling: create, list and revoke keys (admin), and
``whoami`` (any key).

A key is shown once, in `KeyCreated`; afterwards it is known by its prefix only (the
``ab12cd…`` of ``aiki_ab12cd…_<secret>``), which listings and the audit trail show.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs

from ._operation import ADMINS, ANYONE, Request, Role, declare


@attrs.frozen(kw_only=True)
class KeyInfo:
    """What the server keeps of a key (never the key itself)."""

    prefix: str
    role: Role
    namespace: str | None = None
    """None: every namespace (admin keys)."""
    name: str = ""
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    """When the key was last used (recorded at most once a minute)."""

    def usable_at(self, now: dt.datetime) -> bool:
        """Whether the key may act at ``now`` (not revoked, not expired)."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@attrs.frozen(kw_only=True)
class KeyCreated:
    """Reply to `CreateKey`: the key (shown this once) and its record."""

    key: str
    info: KeyInfo


@attrs.frozen(kw_only=True)
class CreateKey(Request[KeyCreated]):
    """Create an API key with one role in one namespace (admin keys: every namespace)."""

    role: Role
    namespace: str | None = "default"
    """The namespace the key acts in; None only for an admin key of every namespace."""
    name: str = ""
    """Who or what holds the key (shown in listings and the audit trail)."""
    expires_in_seconds: float | None = None
    """None: the key does not expire (it can still be revoked)."""


@attrs.frozen(kw_only=True)
class KeyList:
    """Reply to `ListKeys`."""

    keys: tuple[KeyInfo, ...] = ()


@attrs.frozen(kw_only=True)
class ListKeys(Request[KeyList]):
    """Every API key (usable, expired and revoked), newest first."""

    include_revoked: bool = True


@attrs.frozen(kw_only=True)
class RevokeKey(Request[KeyInfo]):
    """Revoke a key at once, on every server (within a second); its record stays."""

    prefix: str


@attrs.frozen(kw_only=True)
class Identity:
    """Reply to `WhoAmI`: the key a request was made with."""

    authenticated: bool
    """False: the server runs without authentication (``--insecure-no-auth``)."""
    prefix: str | None = None
    name: str = ""
    role: Role = "admin"
    namespace: str | None = None
    """None: every namespace."""


@attrs.frozen(kw_only=True)
class WhoAmI(Request[Identity]):
    """Who the server takes the caller for: the key's prefix, name, role and namespace."""


CREATE_KEY: Final = declare("create_key", CreateKey, callers=ADMINS)
LIST_KEYS: Final = declare("list_keys", ListKeys, callers=ADMINS)
REVOKE_KEY: Final = declare("revoke_key", RevokeKey, callers=ADMINS)
WHOAMI: Final = declare("whoami", WhoAmI, callers=ANYONE)

OPERATIONS: Final = (CREATE_KEY, LIST_KEYS, REVOKE_KEY, WHOAMI)
"""API keys and identity."""
