"""Mutual TLS end to end: the server asks every client for a certificate its CA signed. A
worker with one that names the worker role and a namespace serves runs without an API
key; a worker without a certificate, and a client with one from another CA, are refused
at the handshake; a certificate that names no role still needs a key."""

from __future__ import annotations

import ssl
import uuid

import pytest
import trio
import trustme

import aiki
from tests._deadline import deadline
from tests._processes import start_aiki
from transport.tls import server_tls

from . import waits_flows
from .conftest import Cluster

TLS = True
MTLS = True


def _worker_env(cluster: Cluster, cert: tuple[str, str] | None) -> dict[str, str]:
    """A worker's environment with no API key: the CA to trust, and ``cert`` if given."""
    assert cluster.tls is not None
    env = {"AIKI_E2E_DATABASE_URL": cluster.database_url, "AIKI_CA_FILE": cluster.tls.ca_file}
    if cert is not None:
        env["AIKI_CLIENT_CERT"], env["AIKI_CLIENT_KEY"] = cert
    return env


def _spawn_worker(cluster: Cluster, env: dict[str, str], *extra: str):  # type: ignore[no-untyped-def]
    return start_aiki(
        ["worker", "tests.e2e.waits_flows:waits_worker", "--server-url", cluster.url,
         "--redis-url", cluster.redis_url, "--shutdown-grace", "5", *extra],
        cluster.logs / f"worker-{uuid.uuid4().hex[:6]}.log", env,
    )  # fmt: skip


@deadline(90)
async def test_a_worker_with_a_certificate_serves_runs_without_a_key(cluster: Cluster) -> None:
    """Only the certificate's worker serves the waits flows (the cluster's workers serve
    others): its run completes, and the server lists it in the certificate's namespace."""
    assert cluster.tls is not None
    cert = cluster.tls.client("worker-by-certificate", "worker", "default")
    worker = _spawn_worker(cluster, _worker_env(cluster, cert))
    try:
        match = await trio.to_thread.run_sync(worker.wait_ready, r"aiki worker (\S+) serving")
        async with cluster.client() as client:
            handle = await waits_flows.quick_flow.start(client, 4)
            with trio.fail_after(30):
                result = await handle.wait_for_status("completed")
            workers = {found.id for found in await client.list_workers()}
        assert result.success
        assert match.group(1) in workers
    finally:
        worker.stop()


@deadline(90)
async def test_no_certificate_or_another_cas_is_refused_at_the_handshake(
    cluster: Cluster,
) -> None:
    """A worker without a certificate never registers (its start times out on the
    handshake's refusal); an SDK client presenting a certificate from another CA, or
    none, gets `aiki.UnavailableError` naming the TLS alert; one whose certificate names
    no role gets 401 without a key and is served with one."""
    assert cluster.tls is not None
    worker = _spawn_worker(cluster, _worker_env(cluster, None), "--start-timeout", "3")
    code = await trio.to_thread.run_sync(worker.process.wait, 60)
    assert code != 0
    log = worker.log.read_text(errors="replace")
    assert "serving" not in log
    assert "CERTIFICATE_REQUIRED" in log, log[-2000:]

    stranger = trustme.CA().issue_cert("stranger.clients.test", common_name="stranger",
                                       organization_unit_name="admin",
                                       organization_name="*")  # fmt: skip
    directory = cluster.logs / "stranger"
    directory.mkdir(exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in stranger.cert_chain_pems))
    stranger.private_key_pem.write_to_path(str(key_file))
    cases = (
        ((str(cert_file), str(key_file)), "UNKNOWN_CA"),
        ((None, None), "CERTIFICATE_REQUIRED"),
    )
    for (client_cert, client_key), alert in cases:
        for session in (True, False):  # the WebSocket session, and plain HTTPS
            refused = aiki.Client(cluster.url, ca_file=cluster.tls.ca_file, session=session,
                                  client_cert=client_cert, client_key=client_key)  # fmt: skip
            with pytest.raises(aiki.UnavailableError) as raised:
                async with refused:
                    await refused.list_runs(limit=1)
            if session:  # (over HTTP, httpx keeps only "ReadError" of the alert)
                assert alert in str(raised.value), raised.value

    nameless = cluster.client_certs["none"]
    async with aiki.Client(cluster.url, ca_file=cluster.tls.ca_file, session=False,
                           client_cert=nameless[0], client_key=nameless[1]) as keyless:  # fmt: skip
        with pytest.raises(aiki.UnauthenticatedError):
            await keyless.list_runs(limit=1)
    async with cluster.client("viewer", session=False) as viewer:  # its key, and that cert
        assert (await viewer.list_runs(limit=1)).runs is not None


@deadline(30)
async def test_a_certificates_subject_gives_its_role_and_namespace(cluster: Cluster) -> None:
    """A viewer's certificate for namespace ``other`` reads (its namespace's runs, none
    of default's) and may not start runs."""
    assert cluster.tls is not None
    cert, key = cluster.tls.client("viewer-of-other", "viewer", "other")
    async with cluster.client() as client:
        started = await waits_flows.quick_flow.start(client, 1)
    async with aiki.Client(cluster.url, ca_file=cluster.tls.ca_file, session=False,
                           client_cert=cert, client_key=key) as viewer:  # fmt: skip
        page = await viewer.list_runs(limit=50)
        assert started.run_id not in {run.id for run in page.runs}
        with pytest.raises(aiki.ForbiddenError):
            await waits_flows.quick_flow.start(viewer, 1)
        with pytest.raises(aiki.RunNotFoundError):
            await viewer.handle(started.run_id).refresh()


def test_the_server_context_asks_for_certificates() -> None:
    """(What the handshake's refusal rests on.)"""

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    with (
        issued.cert_chain_pems[0].tempfile() as cert,
        issued.private_key_pem.tempfile() as key,
        ca.cert_pem.tempfile() as ca_file,
    ):
        context = server_tls(cert, key, ca_file)
    assert context.verify_mode == ssl.CERT_REQUIRED
