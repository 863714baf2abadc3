"""API keys and the dashboard's sign-ins: their format, their hash, and the SQL that
keeps them.

A key is ``aiki_<prefix>_<secret>``: the prefix (12 lowercase base32 characters, 60 bits)
names the key in listings and in the audit trail; the secret (43 characters, 256 random
bits) is what proves it. Only the SHA-256 of the whole key is stored.

A dashboard sign-in is a session token of the same shape, ``aikis_<id>_<secret>``, kept
in the browser's HttpOnly cookie instead of the key: it acts with its key's principal
while the session is neither ended (signed out) nor expired and the key is usable.
Only its SHA-256 is stored too.

A fast hash is right here, unlike for passwords: a slow one (bcrypt, argon2) makes
guessing a *low-entropy* secret expensive, but nobody guesses 256 random bits, and a slow
hash would cost every request milliseconds of CPU. The stored hash is useless without the
key (no rainbow table covers 256-bit secrets), and comparing digests in constant time
leaves no timing to learn from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Final

import attrs

from ...protocol import KeyInfo, Role
from .runs import as_time

if TYPE_CHECKING:
    import datetime as dt

    from transport.postgres import Row, Transaction

PREFIX_CHARS: Final = 12
SECRET_BYTES: Final = 32
_KEY: Final = re.compile(r"aiki_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
_SESSION: Final = re.compile(r"aikis_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")
CSRF_CONTEXT: Final = b"aiki dashboard csrf"
ROLES: Final[tuple[Role, ...]] = ("viewer", "client", "worker", "admin")


def new_key(kind: str = "aiki") -> tuple[str, str]:
    """A fresh key (or, with ``kind`` ``"aikis"``, session token) and its prefix."""
    prefix = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:PREFIX_CHARS]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
    return f"{kind}_{prefix}_{secret}", prefix


def prefix_of(key: str) -> str | None:
    """The prefix of a well-formed key, or None if ``key`` is not one."""
    found = _KEY.fullmatch(key)
    return None if found is None else found.group(1)


def key_hash(key: str) -> bytes:
    """The SHA-256 digest stored for ``key``."""
    return hashlib.sha256(key.encode()).digest()


def matches(key: str, stored_hash: bytes) -> bool:
    """Whether ``key`` is the one ``stored_hash`` was made from (in constant time)."""
    return hmac.compare_digest(key_hash(key), stored_hash)


@attrs.frozen(repr=False)
class Credential:
    """What the server keeps of a presented key or session token: its prefix (the key's,
    or the session's ID) and SHA-256, never the secret (a session checks its credential
    again every second for as long as it lives)."""

    prefix: str
    digest: bytes
    signed_in: bool = False
    """A dashboard sign-in's session token, not an API key."""

    @classmethod
    def of(cls, key: str) -> Credential | None:
        """The credential of API key ``key``; None if it is not shaped like a key."""
        prefix = prefix_of(key)
        return None if prefix is None else cls(prefix, key_hash(key))

    @classmethod
    def of_session(cls, token: str) -> Credential | None:
        """The credential of a dashboard session token; None if it is not shaped like one."""
        found = _SESSION.fullmatch(token)
        return None if found is None else cls(found.group(1), key_hash(token), signed_in=True)

    def __repr__(self) -> str:
        return f"Credential({self.prefix!r}{', signed in' if self.signed_in else ''})"


def csrf_token(session_token: str) -> str:
    """The token a signed-in page sends back in a header with every state change: derived
    from its session token, which a page on another site can neither read nor guess."""
    mac = hmac.new(session_token.encode(), CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


_COLUMNS: Final = (
    "k.prefix, k.role, k.namespace, k.name, k.created_at, k.expires_at, k.revoked_at,"
    " k.last_used_at"
)


def _api_key(row: Row) -> KeyInfo:
    role = str(row[1])
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} stored for key {row[0]}")
    return KeyInfo(
        prefix=str(row[0]),
        role=role,
        namespace=None if row[2] is None else str(row[2]),
        name=str(row[3]),
        created_at=as_time(row[4]),
        expires_at=None if row[5] is None else as_time(row[5]),
        revoked_at=None if row[6] is None else as_time(row[6]),
        last_used_at=None if row[7] is None else as_time(row[7]),
    )


def create(
    tx: Transaction,
    *,
    role: Role,
    namespace: str | None,
    name: str,
    expires_at: dt.datetime | None,
) -> tuple[str, KeyInfo]:
    """Store a new key; return the key (to show once) and its record.

    Raises:
        ValueError: a key other than an admin key without a namespace.
    """
    if namespace is None and role != "admin":
        raise ValueError(f"a {role} key needs a namespace")
    key, prefix = new_key()
    row = tx.fetch_one(
        f"INSERT INTO aiki_api_keys AS k (prefix, key_hash, role, namespace, name, expires_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (prefix, key_hash(key), role, namespace, name, expires_at),
    )
    assert row is not None
    return key, _api_key(row)


def verify(tx: Transaction, key: str, *, touch: bool = False) -> KeyInfo | None:
    """The record of ``key`` if it is a stored key (usable or not), else None.

    Args:
        touch: record that the key is being used (at most once a minute, so a busy key
            costs one write a minute, not one per request).
    """
    credential = Credential.of(key)
    return None if credential is None else verify_credential(tx, credential, touch=touch)


def verify_credential(
    tx: Transaction, credential: Credential, *, touch: bool = False
) -> KeyInfo | None:
    """`verify`, from what the server keeps of a key (its `Credential`); for a session
    token, the record of its key while the session is neither ended nor expired."""
    if credential.signed_in:
        row = tx.fetch_one(
            f"SELECT {_COLUMNS}, s.token_hash FROM aiki_dashboard_sessions s"
            " JOIN aiki_api_keys k ON k.prefix = s.key_prefix"
            " WHERE s.id = %s AND s.ended_at IS NULL AND s.expires_at > now()",
            (credential.prefix,),
        )
    else:
        row = tx.fetch_one(
            f"SELECT {_COLUMNS}, k.key_hash FROM aiki_api_keys k WHERE k.prefix = %s",
            (credential.prefix,),
        )
    if row is None or not isinstance(row[8], bytes):
        return None
    if not hmac.compare_digest(credential.digest, row[8]):
        return None
    found = _api_key(row)
    if touch:
        tx.execute(
            "UPDATE aiki_api_keys SET last_used_at = now() WHERE prefix = %s"
            " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            (found.prefix,),
        )
    return found


def listing(
    tx: Transaction, *, include_revoked: bool = True, namespace: str | None = None
) -> list[KeyInfo]:
    """Every key (or every key not revoked), newest first; with ``namespace``, only the
    keys of that namespace."""
    rows = tx.fetch_all(
        f"SELECT {_COLUMNS} FROM aiki_api_keys k"
        " WHERE (%(all)s OR revoked_at IS NULL)"
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " ORDER BY created_at DESC",
        {"all": include_revoked, "namespace": namespace},
    )
    return [_api_key(row) for row in rows]


def admin_exists(tx: Transaction) -> bool:
    """Whether some admin key is usable now (if not, the server says how to make one)."""
    row = tx.fetch_one(
        "SELECT 1 FROM aiki_api_keys WHERE role = 'admin' AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now()) LIMIT 1"
    )
    return row is not None


def revoke(tx: Transaction, prefix: str, *, namespace: str | None = None) -> KeyInfo | None:
    """Revoke the key named ``prefix`` (kept, for the audit trail); None if there is none
    (in ``namespace``, when one is given)."""
    row = tx.fetch_one(
        f"UPDATE aiki_api_keys k SET revoked_at = coalesce(revoked_at, now())"
        f" WHERE prefix = %(prefix)s"
        f" AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s) RETURNING {_COLUMNS}",
        {"prefix": prefix, "namespace": namespace},
    )
    return None if row is None else _api_key(row)


def sign_in(tx: Transaction, key_prefix: str, *, seconds: float) -> str:
    """Start a dashboard session acting with the key named ``key_prefix``, for at most
    ``seconds``; return its token (to set in the browser's cookie, never stored)."""
    token, session_id = new_key("aikis")
    tx.execute(
        "INSERT INTO aiki_dashboard_sessions (id, token_hash, key_prefix, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (session_id, key_hash(token), key_prefix, seconds),
    )
    return token


def sign_out(tx: Transaction, credential: Credential) -> bool:
    """End the dashboard session of ``credential`` (on every server); whether it was one
    that had not ended."""
    row = tx.fetch_one(
        "UPDATE aiki_dashboard_sessions SET ended_at = now()"
        " WHERE id = %s AND token_hash = %s AND ended_at IS NULL RETURNING id",
        (credential.prefix, credential.digest),
    )
    return row is not None
