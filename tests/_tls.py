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
                            base64.b64encode(hashlib.sha256(spki).digest()).decode())  # fmt: skip
