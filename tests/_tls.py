"""A throwaway certificate authority for the TLS tests (trustme): no certificate files in
git, a fresh CA per use."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import attrs
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization


@attrs.frozen
class Certificates:
    """A CA's certificate, and a server certificate it signed for the loopback names."""

    ca_file: str
    cert_file: str
    key_file: str
    spki_sha256: str
    """The server key's SPKI hash, base64 (what Chromium's
    ``--ignore-certificate-errors-spki-list`` pins)."""
    authority: trustme.CA = attrs.field(eq=False, repr=False)
    directory: Path = attrs.field(eq=False, repr=False)

    def client(
        self, name: str, role: str | None = None, namespace: str | None = "default"
    ) -> tuple[str, str]:
        """A client certificate this CA signed (subject CN=name, OU=role, O=namespace;
        no OU: it names no role) and its key, as PEM files; their paths."""
        issued = self.authority.issue_cert(
            f"{name}.clients.test", common_name=name, organization_unit_name=role,
            organization_name=namespace if role is not None else None,
        )  # fmt: skip
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key_file))
        return str(cert_file), str(key_file)


def make_certificates(directory: Path) -> Certificates:
    """A CA and a certificate for ``127.0.0.1``, ``localhost`` and ``::1``, as PEM files in
    ``directory``."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost", "::1")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (directory / name for name in ("ca.pem", "cert.pem",
                                                                  "key.pem"))  # fmt: skip
    ca.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    der, spki_format = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    spki = leaf.public_key().public_bytes(der, spki_format)
    return Certificates(str(ca_file), str(cert_file), str(key_file),
                        base64.b64encode(hashlib.sha256(spki).digest()).decode(),
                        authority=ca, directory=directory)  # fmt: skip
