"""Which principal a verified client certificate's subject gives (mutual TLS): exactly
one role (OU) and one namespace (O) name it; anything else names nobody, and its holder
needs an API key."""

from __future__ import annotations

import pytest

from aiki.server._auth import certificate_principal


def _certificate(*subject: tuple[str, str], serial: str = "0A1B2C") -> dict[str, object]:
    return {"subject": tuple(((name, value),) for name, value in subject), "serialNumber": serial}


def test_a_role_and_a_namespace_make_a_principal() -> None:
    found = certificate_principal(_certificate(
        ("commonName", "worker-7"), ("organizationalUnitName", "worker"),
        ("organizationName", "payments"),
    ))  # fmt: skip
    assert found is not None
    assert (found.role, found.roles, found.namespace, found.name) == (
        "worker",
        frozenset({"worker"}),
        "payments",
        "worker-7",
    )
    assert found.prefix == "cert-0a1b2c"


def test_every_namespace_is_for_admins_only() -> None:
    admin = certificate_principal(_certificate(("organizationalUnitName", "admin"),
                                               ("organizationName", "*")))  # fmt: skip
    assert admin is not None
    assert admin.namespace is None
    assert certificate_principal(_certificate(("organizationalUnitName", "client"),
                                              ("organizationName", "*"))) is None  # fmt: skip


@pytest.mark.parametrize("subject", [
    (),
    (("commonName", "someone"),),
    (("organizationalUnitName", "worker"),),
    (("organizationName", "default"),),
    (("organizationalUnitName", "root"), ("organizationName", "default")),
    (("organizationalUnitName", "worker"), ("organizationName", "Not A Namespace")),
    (("organizationalUnitName", "worker"), ("organizationalUnitName", "admin"),
     ("organizationName", "default")),
    (("organizationalUnitName", "worker"), ("organizationName", "a"), ("organizationName", "b")),
])  # fmt: skip
def test_a_subject_that_names_no_single_role_and_namespace_names_nobody(
    subject: tuple[tuple[str, str], ...],
) -> None:
    assert certificate_principal(_certificate(*subject)) is None


def test_no_certificate_names_nobody() -> None:
    assert certificate_principal(None) is None
    assert certificate_principal({}) is None
