"""Who is calling: the API key a request or session presents, checked against the stored
keys through a short-lived cache, before the application sees the request.

`Authentication` (ASGI middleware) takes the key from ``Authorization: Bearer <key>`` or,
for the dashboard, the session its sign-in started from the ``aiki_session`` cookie
(HttpOnly, holding a session token, never the key: signing out ends the session on every
server, and revoking the key ends its sessions). A request signed in by the cookie may
change something (``POST``) only with the session's CSRF token in ``x-aiki-csrf``. A
request without a usable key gets ``401`` (a WebSocket upgrade too, before any session
exists), except on the open paths: ``/healthz``, ``/readyz``, the dashboard's static
files (its sign-in page) and sign-in/sign-out themselves. What the key's role allows is
decided per operation (`aiki.server.operations.authorize`). A request with a valid key
admits its connection (`transport.asgi.ADMIT`): until then the connection is among the
few without a key that the listener keeps. A key over its request quota
(`aiki.server._quotas`) gets ``429`` with ``Retry-After``.

A key is looked up at most once per `CACHE_SECONDS` per server: requests in between are
answered from memory (no hash and query per request). A revocation (or an expiry) is
therefore honoured by every server within `CACHE_SECONDS`, open sessions included (they
check their key again at every request and every `CACHE_SECONDS`). A key that is not
stored is remembered as unknown for the same time, and a malformed one is never looked
up; concurrent requests with one key share its lookup. A flood of bad keys thus costs at
most one query per key and second; at most `CACHE_ENTRIES` keys are remembered (the
oldest are forgotten first).
"""

from __future__ import annotations

import collections
import datetime as dt
import hmac
import http.cookies
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from transport import StorageError
from transport.asgi import ADMIT, PEER_CERTIFICATE

from ..errors import (
    AikiError,
    BadRequestError,
    ForbiddenError,
    RateLimitedError,
    UnavailableError,
)
from ..protocol import ANYONE, KeyInfo, Role, is_namespace
from ._guard import refuse
from ._quotas import KeyQuotas, Quotas
from .store import keys
from .store.keys import ROLES

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from transport.postgres import PostgresStore

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    App = Callable[[Scope, Receive, Send], Awaitable[None]]

CACHE_SECONDS: Final = 1.0
CACHE_ENTRIES: Final = 10_000
COOKIE: Final = "aiki_session"
"""The dashboard's sign-in cookie: a session token (`keys.sign_in`), never the key
(HttpOnly, SameSite=Strict)."""
CSRF_COOKIE: Final = "aiki_csrf"
"""The signed-in page's CSRF token (`keys.csrf_token`), which page script reads and sends
back in `CSRF_HEADER` (not HttpOnly: it proves nothing without the session's cookie)."""
CSRF_HEADER: Final = "x-aiki-csrf"
NAMESPACE_HEADER: Final = "aiki-namespace"
"""A request's namespace: a key of every namespace acts in that one alone (see
`acting_in`)."""
PRINCIPAL: Final = "aiki.principal"
"""Where `Authentication` leaves the caller's principal in the ASGI scope."""
CREDENTIAL: Final = "aiki.credential"
"""Where it leaves what is kept of the presented key (`keys.Credential`, never the key)."""
NO_KEY: Final = "this server needs an API key: Authorization: Bearer aiki_..."
BAD_KEY: Final = "the API key is not valid: unknown, revoked or expired"
OPEN_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/auth/sign-in", "/auth/sign-out"})
OPEN_PREFIXES: Final = ("/dashboard/",)


@attrs.frozen(kw_only=True)
class Principal:
    """Who a caller is: the key it proved it holds, what it may do, and where."""

    prefix: str | None
    """The key's prefix; None when the server runs without authentication."""
    name: str
    role: Role
    roles: frozenset[Role]
    """The roles whose operations it may call (its key's; every role without auth)."""
    namespace: str | None
    """None: every namespace (admin keys; everyone without auth)."""

    @classmethod
    def of_key(cls, key: KeyInfo) -> Principal:
        """The principal of a stored key."""
        return cls(prefix=key.prefix, name=key.name, role=key.role, roles=frozenset({key.role}),
                   namespace=key.namespace)  # fmt: skip

    def __str__(self) -> str:
        if self.prefix is None:
            return "anyone (no authentication)"
        return f"key {self.prefix} ({self.name})" if self.name else f"key {self.prefix}"


def certificate_principal(certificate: dict[str, object] | None) -> Principal | None:
    """The principal of a client certificate the TLS handshake verified (mutual TLS):
    its subject's OU names the role, its O the namespace (``*``: every namespace, for an
    admin), its CN the name; None: no certificate, or one that names no role and
    namespace (its holder then needs an API key)."""
    if not certificate:
        return None
    fields: dict[str, list[str]] = {}
    subject = certificate.get("subject", ())
    for entry in subject if isinstance(subject, tuple) else ():
        for name, value in entry:
            fields.setdefault(str(name), []).append(str(value))
    roles = [role for role in fields.get("organizationalUnitName", ()) if role in ROLES]
    namespaces = fields.get("organizationName", ())
    if len(roles) != 1 or len(namespaces) != 1:
        return None
    role, namespace = roles[0], namespaces[0]
    if (namespace == "*" and role != "admin") or (namespace != "*" and not is_namespace(namespace)):
        return None
    serial = str(certificate.get("serialNumber", "")).lower()[:16]
    return Principal(prefix=f"cert-{serial}", name=(fields.get("commonName") or [""])[0][:200],
                     role=role, roles=frozenset({role}),
                     namespace=None if namespace == "*" else namespace)  # fmt: skip


NO_AUTH: Final = Principal(prefix=None, name="", role="admin", roles=ANYONE, namespace=None)
"""Every caller, when the server runs with ``--insecure-no-auth``."""


@attrs.define
class Authenticator:
    """Turns presented keys into principals (see the module docstring).

    Args:
        lookup: the stored record of a key, noting its use (`lookup_in`).
        now: the wall clock (expiry is a wall-clock time).
    """

    lookup: Callable[[keys.Credential], Awaitable[KeyInfo | None]]
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _cache: collections.OrderedDict[bytes, tuple[float, KeyInfo | None, Principal | None]] = (
        attrs.field(factory=collections.OrderedDict, init=False)
    )
    """Lookups by the key's SHA-256 (no key is kept beyond its request: `keys.Credential`)."""
    _looking: dict[bytes, trio.Event] = attrs.field(factory=dict, init=False)
    """Keys being looked up now: concurrent requests with one key share one lookup."""

    async def principal(self, key: str) -> Principal | None:
        """Who holds ``key``; None if it is not a stored key, or is revoked or expired.

        Raises:
            aiki.UnavailableError: the key had to be looked up, and could not be.
        """
        credential = keys.Credential.of(key)
        return None if credential is None else await self.principal_of(credential)

    async def principal_of(self, credential: keys.Credential) -> Principal | None:
        """`principal`, from what the server keeps of a key.

        Raises:
            aiki.UnavailableError: the key had to be looked up, and could not be.
        """
        digest = credential.digest
        cached = self._cache.get(digest)
        while cached is None or trio.current_time() - cached[0] >= CACHE_SECONDS:
            looking = self._looking.get(digest)
            if looking is not None:  # another request is looking this key up: share it
                await looking.wait()
                cached = self._cache.get(digest)
                continue
            cached = await self._look_up(credential)
        found, principal = cached[1], cached[2]
        if found is None or not found.usable_at(self.now()):
            return None
        return principal

    async def _look_up(
        self, credential: keys.Credential
    ) -> tuple[float, KeyInfo | None, Principal | None]:
        digest = credential.digest
        self._looking[digest] = done = trio.Event()
        try:
            found = await self.lookup(credential)
        except StorageError as exc:
            raise UnavailableError(f"cannot check the API key now: {exc}") from exc
        finally:
            del self._looking[digest]
            done.set()
        cached = (trio.current_time(), found, None if found is None else Principal.of_key(found))
        self._cache[digest] = cached
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return cached

    def known_valid(self, credential: keys.Credential) -> bool:
        """Whether ``credential`` was valid when it was last looked up (however long ago:
        it is looked up again as usual, so a revocation still counts)."""
        cached = self._cache.get(credential.digest)
        return cached is not None and cached[1] is not None and cached[1].usable_at(self.now())

    def forget_credential(self, credential: keys.Credential) -> None:
        """Look ``credential`` up again at its next use (its session just ended)."""
        self._cache.pop(credential.digest, None)

    def forget(self, prefix: str) -> None:
        """Look the key named ``prefix`` up again at its next use (it was just revoked)."""
        for key in [key for key, cached in self._cache.items()
                    if cached[1] is not None and cached[1].prefix == prefix]:  # fmt: skip
            del self._cache[key]


def lookup_in(store: PostgresStore) -> Callable[[keys.Credential], Awaitable[KeyInfo | None]]:
    """Looks keys up in ``store``, recording their use (at most once a minute per key)."""

    async def lookup(credential: keys.Credential) -> KeyInfo | None:
        return await store.transact(lambda tx: keys.verify_credential(tx, credential, touch=True))

    return lookup


@attrs.frozen
class SignIns:
    """The dashboard's sessions, kept in the store (`keys.sign_in`)."""

    start: Callable[[str], Awaitable[str]]
    """Start a session acting with the key of this prefix; its token."""
    end: Callable[[keys.Credential], Awaitable[bool]]
    """End the session of this credential on every server; whether it was one."""


def sign_ins_in(store: PostgresStore, *, seconds: float) -> SignIns:
    """Dashboard sessions in ``store``, each lasting at most ``seconds``."""

    async def start(prefix: str) -> str:
        return await store.transact(lambda tx: keys.sign_in(tx, prefix, seconds=seconds))

    async def end(credential: keys.Credential) -> bool:
        return await store.transact(lambda tx: keys.sign_out(tx, credential))

    return SignIns(start, end)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {bytes(name).lower(): bytes(value) for name, value in scope.get("headers", ())}


@attrs.frozen
class Presented:
    """What a request presents to prove who it is."""

    credential: keys.Credential | None
    """None: something that is not shaped like a key (or a session token)."""
    csrf: str | None = None
    """With a dashboard session's cookie: the token its page must send back on a state
    change (`CSRF_HEADER`)."""


def presented(scope: Scope) -> Presented | None:
    """What a request presents: an API key (``Authorization: Bearer <key>``), else the
    dashboard session's cookie; None: nothing."""
    headers = _headers(scope)
    authorization = headers.get(b"authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else ""
        return Presented(keys.Credential.of(key))
    token = _cookie(headers, COOKIE)
    if token is None:
        return None
    credential = keys.Credential.of_session(token)
    return Presented(credential, None if credential is None else keys.csrf_token(token))


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    cookie = headers.get(b"cookie")
    if cookie is None:
        return None
    jar = http.cookies.SimpleCookie()
    try:
        jar.load(cookie.decode("latin-1"))
    except http.cookies.CookieError:
        return None
    return jar[name].value if name in jar else None


def acting_in(principal: Principal, wanted: bytes | None) -> Principal:
    """``principal``, acting in the namespace a request names (`NAMESPACE_HEADER`): a key
    of every namespace acts in that one alone, as a key of it would; a key of one
    namespace may name its own.

    Raises:
        aiki.BadRequestError: the name is not a namespace's.
        aiki.ForbiddenError: the key acts in another namespace.
    """
    if wanted is None:
        return principal
    name = wanted.decode("latin-1")
    if not is_namespace(name):
        raise BadRequestError(
            f"{NAMESPACE_HEADER} {name[:64]!r} is not a namespace (1-63 lowercase letters, "
            "digits and inner hyphens)", errors=(f"not a namespace @ header {NAMESPACE_HEADER}",),
        )  # fmt: skip
    if principal.namespace is None:
        return attrs.evolve(principal, namespace=name)
    if principal.namespace != name:
        raise ForbiddenError(f"{principal} acts in namespace {principal.namespace!r} only, "
                             f"not {name!r}")  # fmt: skip
    return principal


def csrf_refusal(scope: Scope, proof: Presented) -> str | None:
    """Why a request signed in by the dashboard's cookie may not change anything: every
    ``POST`` must send back the session's token in `CSRF_HEADER` (a page on another site
    cannot read it); None: it may (or it is not signed in by the cookie)."""
    if proof.csrf is None or scope["type"] != "http" or scope.get("method") != "POST":
        return None
    sent = _headers(scope).get(CSRF_HEADER.encode())
    if sent is not None and hmac.compare_digest(sent, proof.csrf.encode()):
        return None
    return (f"a signed-in dashboard request must send the {CSRF_HEADER} header it was "
            "given (the cookie alone is not enough)")  # fmt: skip


def is_open(path: str) -> bool:
    """Whether ``path`` is served without a key (health, the sign-in page)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


@attrs.frozen
class Authentication:
    """ASGI middleware: find the caller's principal (see the module docstring), refuse
    callers without one, and leave it in the scope (`PRINCIPAL`) for the application.

    Args:
        authenticator: None: the server runs without authentication (everyone is
            `NO_AUTH`).
    """

    app: App
    authenticator: Authenticator | None
    quotas: KeyQuotas | None = None
    """Each key's request quota (a request over it gets 429 with Retry-After)."""
    wrong_keys: Quotas | None = None
    """Keys that are not valid, per peer address: an address over it gets 429 before its
    next key is looked up, unless that key was valid at its last lookup (a client behind
    the same address as a guesser keeps working)."""

    def _wrong_keys_wait(self, peer: str, credential: keys.Credential) -> float:
        """How long ``peer`` must wait before a key of it is looked up (0.0: now); a key
        that was valid at its last lookup is never held back."""
        if self.wrong_keys is None or self.authenticator is None:
            return 0.0
        wait = self.wrong_keys.wait(peer, trio.current_time())
        return 0.0 if wait == 0 or self.authenticator.known_valid(credential) else wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.authenticator is None:
            scope[PRINCIPAL] = NO_AUTH
            _admit(scope)
            await self.app(scope, receive, send)
            return
        proof = presented(scope)
        credential = None if proof is None else proof.credential
        principal = None
        if proof is None:  # no key: a client certificate, if one names who it is
            principal = certificate_principal(scope.get(PEER_CERTIFICATE))
        peer = str((scope.get("client") or ("",))[0])
        if credential is not None and not is_open(scope.get("path", "")):
            wait = self._wrong_keys_wait(peer, credential)
            if wait > 0:
                await refuse(scope, send, 429, "rate_limited", "too many keys that are not "
                             f"valid from {peer}: retry in {wait:.3f} s",
                             retry_after=round(wait, 3) or 0.001)  # fmt: skip
                return
            try:
                principal = await self.authenticator.principal_of(credential)
            except UnavailableError as exc:
                await refuse(scope, send, 503, exc.code, str(exc))
                return
        if principal is None and not is_open(scope.get("path", "")):
            if proof is not None and self.wrong_keys is not None:
                self.wrong_keys.take(peer, trio.current_time())
            await refuse(scope, send, 401, "unauthenticated", NO_KEY if proof is None else BAD_KEY)
            return
        if principal is not None:
            try:
                principal = acting_in(principal, _headers(scope).get(NAMESPACE_HEADER.encode()))
            except AikiError as exc:
                await refuse(scope, send, exc.http_status, exc.code, str(exc))
                return
        if principal is not None and proof is not None:
            refusal = csrf_refusal(scope, proof)
            if refusal is not None:
                await refuse(scope, send, 403, "forbidden", refusal)
                return
        scope[PRINCIPAL], scope[CREDENTIAL] = principal, credential
        if principal is not None:
            _admit(scope)
            if self.quotas is not None and principal.prefix is not None:
                try:
                    self.quotas.check(principal.prefix, principal.namespace)
                except RateLimitedError as exc:
                    await refuse(scope, send, 429, exc.code, str(exc),
                                 retry_after=exc.retry_after_seconds)  # fmt: skip
                    return
        await self.app(scope, receive, send)


def _admit(scope: Scope) -> None:
    """Tell the listener that this request's connection proved who it is: it no longer
    counts among connections without a key (`transport.asgi.ADMIT`)."""
    admit = scope.get(ADMIT)
    if admit is not None:
        admit()
