"""API keys as stored: the key is shown once and only its hash is kept; a key is found by
its prefix and proven by its secret; revoked and expired keys are known as such."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest
import trio

from aiki.protocol import KeyInfo
from aiki.server import migrations
from aiki.server._auth import CACHE_SECONDS, Authenticator
from aiki.server.store import keys
from tests._deadline import deadline
from tests._waiting import wait_until
from transport.migrations import apply_migrations_sync
from transport.postgres import Transaction


@pytest.fixture
def tx(pg_url: str) -> Iterator[Transaction]:
    apply_migrations_sync(pg_url, migrations())
    with psycopg.connect(pg_url, autocommit=True) as connection:
        yield Transaction(connection)


def test_a_key_is_proven_by_its_secret_and_only_its_hash_is_kept(tx: Transaction) -> None:
    key, created = keys.create(tx, role="client", namespace="default", name="ci", expires_at=None)
    assert key.startswith(f"aiki_{created.prefix}_")
    assert keys.prefix_of(key) == created.prefix
    found = keys.verify(tx, key)
    assert found is not None
    assert (found.role, found.namespace, found.name) == ("client", "default", "ci")
    secret = key.removeprefix(f"aiki_{created.prefix}_")  # (it may hold "_" itself)
    forged = key[: -len(secret)] + ("A" if secret[0] != "A" else "B") + secret[1:]
    assert keys.verify(tx, forged) is None
    assert keys.verify(tx, "Bearer " + key) is None
    assert keys.verify(tx, "aiki_short_x") is None
    row = tx.fetch_one("SELECT * FROM aiki_api_keys WHERE prefix = %s", (created.prefix,))
    assert row is not None
    assert not any(secret in str(value) for value in row)
    assert secret.encode() not in b"".join(v for v in row if isinstance(v, bytes))


def test_two_keys_never_share_a_prefix_or_a_secret(tx: Transaction) -> None:
    made = [keys.create(tx, role="viewer", namespace="a", name="", expires_at=None)[0]
            for _ in range(50)]  # fmt: skip
    assert len({key for key in made}) == 50
    assert len({keys.prefix_of(key) for key in made}) == 50


def test_a_revoked_or_expired_key_is_known_but_not_usable(tx: Transaction) -> None:
    now = dt.datetime.now(dt.UTC)
    key, created = keys.create(tx, role="worker", namespace="a", name="", expires_at=None)
    assert keys.verify(tx, key).usable_at(now)  # type: ignore[union-attr]
    revoked = keys.revoke(tx, created.prefix)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert not keys.verify(tx, key).usable_at(now)  # type: ignore[union-attr]
    assert keys.revoke(tx, "nosuchprefix") is None

    soon = now + dt.timedelta(hours=1)
    later, _ = keys.create(tx, role="client", namespace="a", name="", expires_at=soon)
    assert keys.verify(tx, later).usable_at(now)  # type: ignore[union-attr]
    assert not keys.verify(tx, later).usable_at(soon)  # type: ignore[union-attr]
    assert [found.prefix for found in keys.listing(tx)][-1] == created.prefix


def test_only_an_admin_key_may_span_every_namespace(tx: Transaction) -> None:
    _, admin = keys.create(tx, role="admin", namespace=None, name="root", expires_at=None)
    assert admin.namespace is None
    with pytest.raises(ValueError, match="a client key needs a namespace"):
        keys.create(tx, role="client", namespace=None, name="", expires_at=None)
    with pytest.raises(psycopg.errors.CheckViolation):
        tx.execute("INSERT INTO aiki_api_keys (prefix, key_hash, role) VALUES ('p', '', 'worker')")


class _Lookups:
    """`store.keys.verify` on a connection of its own, counting the lookups."""

    def __init__(self, pg_url: str) -> None:
        self.connection = psycopg.connect(pg_url, autocommit=True)
        self.count = 0

    async def __call__(self, credential: keys.Credential) -> KeyInfo | None:
        self.count += 1
        return await trio.to_thread.run_sync(
            keys.verify_credential, Transaction(self.connection), credential
        )


@deadline(30)
async def test_keys_are_checked_from_a_cache_and_a_revocation_reaches_every_server(
    tx: Transaction, pg_url: str
) -> None:
    """Two servers' authenticators: a hundred checks of a key cost one lookup; a key
    revoked (by either) is refused by both within the cache's second; a flood of one
    unknown key costs one lookup a second, and malformed keys none."""
    key, created = keys.create(tx, role="client", namespace="a", name="ci", expires_at=None)
    first, second = _Lookups(pg_url), _Lookups(pg_url)
    servers = [Authenticator(first), Authenticator(second)]
    for server in servers:
        for _ in range(100):
            principal = await server.principal(key)
            assert principal is not None
            assert (principal.prefix, principal.role, principal.namespace) == (
                created.prefix, "client", "a")  # fmt: skip
    assert (first.count, second.count) == (1, 1)
    # The cache keeps what it learnt under the key's digest: no key stays in memory.
    assert key not in repr(servers[0]._cache)
    assert keys.key_hash(key) in servers[0]._cache

    unknown = keys.new_key()[0]
    for _ in range(100):
        assert await servers[0].principal(unknown) is None
        assert await servers[0].principal("Bearer nonsense") is None
    assert first.count == 2
    other = keys.new_key()[0]
    async with trio.open_nursery() as nursery:  # at once: they share one lookup
        for _ in range(50):
            nursery.start_soon(servers[0].principal, other)
    assert first.count == 3

    keys.revoke(tx, created.prefix)
    revoked_at = trio.current_time()

    async def refused_by_both() -> bool:
        return all([await server.principal(key) is None for server in servers])

    with trio.fail_after(CACHE_SECONDS + 0.5):
        await wait_until(refused_by_both)
    assert trio.current_time() - revoked_at <= CACHE_SECONDS + 0.2
    first.connection.close()
    second.connection.close()
