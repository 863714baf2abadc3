"""No key creates, lists or revokes keys beyond its namespaces: every key operation, called
with a key of every role and scope (bound to namespace A, or an admin key of every
namespace), against keys of A, of B and of every namespace.

The rule: only admin keys manage keys; an admin key of one namespace makes, lists and
revokes keys of that namespace only (another's is not found; one of every namespace is
never made); an every-namespace admin key (the bootstrap's, or one another such key
made) manages all. Everyone may ask who they are.
"""

from __future__ import annotations

import itertools

import psycopg
import pytest

from aiki.server.store import keys
from tests._deadline import deadline
from transport.postgres import Transaction

from .conftest import Api, bearer

A, B = "ns-a", "ns-b"
ROLES = ("viewer", "client", "worker", "admin")
CALLERS = [(role, A) for role in ROLES] + [("admin", None)]
"""Every caller: each role bound to namespace A, and the every-namespace admin."""
_names = itertools.count()


def _make(pg_url: str, role: str, namespace: str | None) -> tuple[str, str]:
    """A new key (stored directly) and its prefix."""
    with psycopg.connect(pg_url, autocommit=True) as connection:
        key, info = keys.create(Transaction(connection), role=role, namespace=namespace,  # type: ignore[arg-type]
                                name=f"key {next(_names)}", expires_at=None)  # fmt: skip
    return key, info.prefix


def _stored(pg_url: str) -> dict[str, tuple[str | None, bool]]:
    """Every stored key: prefix -> (namespace, revoked)."""
    with psycopg.connect(pg_url) as connection:
        rows = connection.execute(
            "SELECT prefix, namespace, revoked_at IS NOT NULL FROM aiki_api_keys"
        ).fetchall()
    return {prefix: (namespace, revoked) for prefix, namespace, revoked in rows}


def _manages(role: str, scope: str | None, namespace: str | None) -> bool:
    """Whether a key of ``role`` bound to ``scope`` may manage keys of ``namespace``."""
    return role == "admin" and (scope is None or scope == namespace)


async def _post(api: Api, key: str, operation: str, body: object) -> tuple[int, dict]:
    response = await api.http.post(f"{api.url}/api/v1/{operation}", json=body,
                                   headers=bearer(key))  # fmt: skip
    return response.status_code, response.json()


@deadline(60)
@pytest.mark.parametrize(
    ("role", "scope"), CALLERS, ids=[f"{r}@{s or 'every'}" for r, s in CALLERS]
)
async def test_no_key_creates_lists_or_revokes_keys_beyond_its_namespaces(
    api: Api, pg_url: str, role: str, scope: str | None
) -> None:
    caller, caller_prefix = _make(pg_url, role, scope)
    others = {namespace: _make(pg_url, "client", namespace)[1] for namespace in (A, B)}

    # whoami: anyone, and it tells the key's own scope.
    status, me = await _post(api, caller, "whoami", {})
    assert status == 200
    assert (me["role"], me["namespace"]) == (role, scope), me

    # create_key: each role for A, B and every namespace.
    for target_role in ROLES:
        for namespace in (A, B, None):
            before = _stored(pg_url)
            status, reply = await _post(api, caller, "create_key", {
                "role": target_role, "namespace": namespace, "name": "made"})  # fmt: skip
            valid = namespace is not None or target_role == "admin"
            if role != "admin":
                assert status == 403, (target_role, namespace, reply)
            elif valid and _manages(role, scope, namespace):
                assert status == 200, (target_role, namespace, reply)
                assert reply["info"]["namespace"] == namespace
                assert reply["info"]["role"] == target_role
                continue
            elif not valid:  # a key of every namespace is an admin key
                assert status == 422, (target_role, namespace, reply)
            else:
                assert status == 403, (target_role, namespace, reply)
            assert _stored(pg_url) == before, "a refused create stored a key"

    # list_keys: an admin sees the keys of its namespaces only.
    status, listed = await _post(api, caller, "list_keys", {})
    stored = _stored(pg_url)
    if role != "admin":
        assert status == 403
    else:
        assert status == 200
        seen = {item["prefix"] for item in listed["keys"]}
        assert seen == {p for p, (ns, _) in stored.items() if _manages(role, scope, ns)}

    # revoke_key: a key of A, of B, and the bootstrap's every-namespace admin key.
    bootstrap = keys.prefix_of(api.keys["admin"])
    assert bootstrap is not None
    for target, namespace in ((others[A], A), (others[B], B), (bootstrap, None)):
        status, reply = await _post(api, caller, "revoke_key", {"prefix": target})
        revoked = _stored(pg_url)[target][1]
        if role != "admin":
            assert (status, revoked) == (403, False), reply
        elif _manages(role, scope, namespace):
            assert (status, revoked) == (200, True), reply
        else:
            assert (status, revoked) == (404, False), reply  # another's: not found
    assert not _stored(pg_url)[caller_prefix][1]
