"""TLS end to end: the server serves HTTPS and WSS on its one port with a certificate a
private (test) CA signed; workers, the SDK client (HTTP and its session), the CLI and the
dashboard in Chromium reach it by trusting that CA, and nothing reaches it otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import trio
from playwright.sync_api import expect, sync_playwright

import aiki
from tests._deadline import deadline

from . import flows
from .conftest import Cluster
from .test_dashboard import _chromium

TLS = True


@deadline(60)
async def test_workers_clients_and_the_cli_work_over_https_and_wss(cluster: Cluster) -> None:
    """The server reports an https:// URL; the workers (AIKI_CA_FILE) run a run the SDK
    starts over its WSS session, and the CLI shows it; plain HTTP and a client that does
    not trust the CA get nowhere."""
    assert cluster.url.startswith("https://")
    assert cluster.tls is not None
    async with cluster.client() as client:  # (trio: over the WSS session)
        handle = await flows.one_task.start(client, 21)
        result = await handle.wait_for_status("completed")
    assert (result.success, result.output) == (True, 42)
    async with cluster.client(session=False) as over_https:
        assert (await over_https.handle(handle.run_id).refresh()).status == "completed"
    env = {**os.environ, **cluster.env(role="client"), "AIKI_SERVER_URL": cluster.url}
    shown = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "aiki", "runs", "show", handle.run_id], env=env,
        capture_output=True, text=True, timeout=60, check=False))  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout

    async with aiki.Client(cluster.url, api_key=cluster.keys["client"]) as untrusting:
        with pytest.raises(aiki.UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.handle(handle.run_id).refresh()
    plain = cluster.url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"{plain}/healthz")
    sign_in = httpx.AsyncClient(verify=aiki.client.tls_for(cluster.tls.ca_file) or True)
    async with sign_in:
        response = await sign_in.post(f"{cluster.url}/auth/sign-in",
                                      json={"key": cluster.keys["viewer"]})  # fmt: skip
    assert response.status_code == 200
    assert "secure" in response.headers["set-cookie"].lower()


def test_the_dashboard_signs_in_and_goes_live_over_https(cluster: Cluster) -> None:
    """Chromium, trusting the server's certificate (pinned by its key), signs in and gets
    the live WSS session; the cookies are Secure."""
    assert cluster.tls is not None
    pin = f"--ignore-certificate-errors-spki-list={cluster.tls.spki_sha256}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(),
                                             args=["--no-sandbox", pin])  # fmt: skip
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(cluster.url + "/")
            page.locator("#api-key").fill(cluster.keys["viewer"])
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            expect(page.locator("#identity")).to_contain_text("viewer")
            cookies = {found["name"]: found for found in page.context.cookies()}
            session, csrf = cookies["aiki_session"], cookies["aiki_csrf"]
            assert (session["secure"], session["httpOnly"]) == (True, True)
            assert (csrf["secure"], csrf["httpOnly"]) == (True, False)
        finally:
            browser.close()
