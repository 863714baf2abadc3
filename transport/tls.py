"""TLS contexts: a server's (its certificate and key) and a client's (the system's trusted
authorities, or a private CA's certificate).

PostgreSQL and Redis take TLS through their URLs (``sslmode=verify-full``, ``rediss://``);
these contexts serve Aiki's own port and its clients.
"""

from __future__ import annotations

import ssl

from ._errors import TransportError


def server_tls(cert_file: str, key_file: str, client_ca_file: str | None = None) -> ssl.SSLContext:
    """The TLS context of a server with this certificate (chain) and private key (PEM):
    TLS 1.2 or later, HTTP/1.1 offered by ALPN. With ``client_ca_file`` (PEM), every
    client must present a certificate that CA signed, or the handshake fails (mutual TLS).

    Raises:
        TransportError: the files cannot be read or do not hold a certificate and its key
            (or, ``client_ca_file``, a CA certificate).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the TLS certificate {cert_file} and key {key_file}: "
                             f"{exc}") from exc  # fmt: skip
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot load the client CA file {client_ca_file}: "
                                 f"{exc}") from exc  # fmt: skip
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The TLS context of a client: the system's trusted authorities, or only those in
    ``ca_file`` (PEM) for a private CA; certificates and host names are checked. With
    ``cert_file`` (and its ``key_file``, unless the key is in it), the client presents
    that certificate to servers that ask for one (mutual TLS).

    Raises:
        TransportError: ``ca_file`` cannot be read or holds no certificate, or
            ``cert_file`` and ``key_file`` do not hold a certificate and its key.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot load the CA file {ca_file}: {exc}") from exc
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot load the client certificate {cert_file} "
                                 f"(key {key_file}): {exc}") from exc  # fmt: skip
    return context


def peer_certificate(stream: object) -> dict[str, object] | None:
    """The certificate a TLS peer presented and the handshake verified (as
    `ssl.SSLSocket.getpeercert` gives it), or None: none, or not a TLS stream."""
    getpeercert = getattr(stream, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        found = getpeercert()
    except (ValueError, AttributeError):  # (no handshake yet)
        return None
    return dict(found) if found else None
