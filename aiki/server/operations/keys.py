"""API keys (admin keys only): create, list, revoke; and ``whoami`` for any key."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from ...errors import NotFoundError, ValidationError
from ...protocol import (
    CREATE_KEY,
    LIST_KEYS,
    REVOKE_KEY,
    WHOAMI,
    CreateKey,
    Identity,
    KeyCreated,
    KeyInfo,
    KeyList,
    ListKeys,
    RevokeKey,
    WhoAmI,
    is_namespace,
)
from ._handlers import Handlers

if TYPE_CHECKING:
    from ._services import Caller, Services


def check_key_request(role: str, namespace: str | None) -> None:
    """Refuse a key that would act everywhere without being an admin key.

    Raises:
        aiki.ValidationError: names the field.
    """
    if namespace is None and role != "admin":
        raise ValidationError(
            f"a {role} key acts in one namespace: give one @ $.namespace",
            errors=("a namespace is required for this role @ $.namespace",),
        )
    if namespace is not None and not is_namespace(namespace):
        raise ValidationError(
            f"namespace {namespace!r} is not a namespace name: 1-63 lowercase letters, digits "
            "and inner hyphens @ $.namespace",
            errors=("not a namespace name @ $.namespace",),
        )


async def create_key(services: Services, request: CreateKey, caller: Caller) -> KeyCreated:
    """A new key, shown in the reply only. An admin key of one namespace makes keys of
    that namespace only (never one for every namespace)."""
    check_key_request(request.role, request.namespace)
    expires_at = None
    if request.expires_in_seconds is not None:
        if request.expires_in_seconds <= 0:
            raise ValidationError("a key expires in the future @ $.expires_in_seconds",
                                  errors=("must be > 0 @ $.expires_in_seconds",))  # fmt: skip
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.expires_in_seconds)
    key, info = await services.transact(caller, lambda scoped: scoped.create_key(
        role=request.role, namespace=request.namespace, name=request.name,
        expires_at=expires_at))  # fmt: skip
    return KeyCreated(key=key, info=info)


async def list_keys(services: Services, request: ListKeys, caller: Caller) -> KeyList:
    """Every key's record (never a key): of the admin key's namespace, if it has one."""
    found = await services.transact(
        caller, lambda scoped: scoped.list_keys(include_revoked=request.include_revoked)
    )
    return KeyList(keys=tuple(found))


async def revoke_key(services: Services, request: RevokeKey, caller: Caller) -> KeyInfo:
    """Revoke a key: this server refuses it at once, every other within a second. An
    admin key of one namespace revokes keys of that namespace only (another's is not
    found)."""
    revoked = await services.transact(caller, lambda scoped: scoped.revoke_key(request.prefix))
    if revoked is None:
        raise NotFoundError(f"no API key with prefix {request.prefix!r}")
    if services.authenticator is not None:
        services.authenticator.forget(request.prefix)
    return revoked


async def whoami(services: Services, request: WhoAmI, caller: Caller) -> Identity:
    """The caller's key, as the server sees it."""
    principal = caller.principal
    return Identity(authenticated=principal.prefix is not None, prefix=principal.prefix,
                    name=principal.name, role=principal.role,
                    namespace=principal.namespace)  # fmt: skip


HANDLERS: Final = (
    Handlers()
    .on(CREATE_KEY, create_key)
    .on(LIST_KEYS, list_keys)
    .on(REVOKE_KEY, revoke_key)
    .on(WHOAMI, whoami)
)
"""The handlers of API keys and identity."""
