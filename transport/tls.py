"""TLS contexts: a server's (its certificate and key) and a client's (the system's trusted
authorities, or a private CA's certificate).

PostgreSQL and Redis take TLS through their URLs (``sslmode=verify-full``, ``rediss://``);
these contexts serve Aiki's own port and its clients.
"""

from __future__ import annotations

import ssl

from ._errors import TransportError


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The TLS context of a server with this certificate (chain) and private key (PEM):
    TLS 1.2 or later, HTTP/1.1 offered by ALPN.

    Raises:
        TransportError: the files cannot be read or do not hold a certificate and its key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the TLS certificate {cert_file} and key {key_file}: "
                             f"{exc}") from exc  # fmt: skip
    return context


def client_tls(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context of a client: the system's trusted authorities, or only those in
    ``ca_file`` (PEM) for a private CA; certificates and host names are checked.

    Raises:
        TransportError: ``ca_file`` cannot be read or holds no certificate.
    """
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the CA file {ca_file}: {exc}") from exc
