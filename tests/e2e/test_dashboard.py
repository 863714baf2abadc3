"""The dashboard in a real browser (headless Chromium driven by Playwright): without a key
it shows only its sign-in page; signed in with a key (kept where page script cannot read
it) it shows a run appear and complete without a reload, and cancels a sleeping run.
Screenshots go to ``test-artifacts/`` (or ``$AIKI_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

import aiki
from tests._processes import ROOT
from tests._waiting import wait_until

from . import waits_flows as flows
from .conftest import Cluster

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"
ARTIFACTS = Path(os.environ.get("AIKI_TEST_ARTIFACTS", ROOT / "test-artifacts"))
T = TypeVar("T")


def _chromium() -> str:
    found = os.environ.get("AIKI_TEST_CHROMIUM") or shutil.which("chromium")
    if found is None:
        pytest.fail("no chromium: install Debian's (apt-get install chromium; .ci/run does) "
                    "or set AIKI_TEST_CHROMIUM")  # fmt: skip
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page()
    opened.set_default_timeout(20_000)
    try:
        yield opened
    finally:
        opened.close()


def _with_client(cluster: Cluster, action: Callable[[aiki.Client], Awaitable[T]]) -> T:
    """Act through the SDK, from outside the browser (the page starts nothing itself)."""

    async def main() -> T:
        with trio.fail_after(30):
            async with cluster.client() as client:
                return await action(client)

    return trio.run(main)


def _sign_in(page: Page, cluster: Cluster, path: str = "/", role: str = "client") -> None:
    """Open the dashboard and sign in with the cluster's key of ``role``."""
    page.goto(cluster.url + path)
    expect(page.locator("#sign-in-view")).to_be_visible()
    page.locator("#api-key").fill(cluster.keys[role])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def _cli(cluster: Cluster, *args: str) -> str:
    """``python -m aiki <args>`` against the cluster with its client key: its output."""
    env = {**os.environ, "AIKI_SERVER_URL": cluster.server_urls,
           "AIKI_API_KEY": cluster.keys["client"]}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "aiki", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_without_a_key_the_dashboard_is_only_its_sign_in_page(page: Page, cluster: Cluster) -> None:
    """No runs, no navigation, no session: the API answers the page 401, a WebSocket from
    it is refused at the upgrade; a wrong key is refused with a message."""
    page.goto(cluster.url + "/")
    expect(page.locator("#sign-in-view")).to_be_visible()
    for hidden in ("#runs-view", "#run-view", "#schedules-view", "#workers-view", "header nav"):
        expect(page.locator(hidden)).to_be_hidden()
    expect(page.locator("#connection")).to_have_attribute("data-state", "down")
    status = page.evaluate("""async () => (await fetch("/api/v1/list_runs", {method: "POST",
        headers: {"content-type": "application/json"}, body: "{}"})).status""")
    assert status == 401
    opened = page.evaluate("""() => new Promise((resolve) => {
        const socket = new WebSocket(`ws://${location.host}/api/v1/session`);
        socket.onopen = () => resolve(true);
        socket.onclose = () => resolve(false);
    })""")
    assert opened is False
    page.locator("#api-key").fill("aiki_aaaaaaaaaaaa_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-result")).to_contain_text("not valid")
    expect(page.locator("#runs-view")).to_be_hidden()
    _screenshot(page, "sign-in")


def test_the_key_is_kept_out_of_page_script_and_signing_out_forgets_it(
    page: Page, cluster: Cluster
) -> None:
    """After signing in, the key is in no place page script can read (cookies, storage,
    the form, the page), nor in the cookie, which holds an HttpOnly, SameSite=Strict
    session token; signing out drops it."""
    _sign_in(page, cluster, role="viewer")
    key = cluster.keys["viewer"]
    readable = page.evaluate("""() => [document.cookie, JSON.stringify(localStorage),
        JSON.stringify(sessionStorage), document.querySelector("#api-key").value,
        document.documentElement.outerHTML].join(" ")""")
    assert key not in readable
    assert "aiki_session" not in page.evaluate("document.cookie")
    (cookie,) = [found for found in page.context.cookies() if found["name"] == "aiki_session"]
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert cookie["value"].startswith("aikis_")  # a session's token, not the key
    expect(page.locator("#identity")).to_contain_text("viewer")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in-view")).to_be_visible()
    assert [found for found in page.context.cookies() if found["name"].startswith("aiki")] == []
    page.reload()
    expect(page.locator("#sign-in-view")).to_be_visible()


def test_signing_out_in_one_browser_ends_the_session_in_another(
    browser: Browser, cluster: Cluster
) -> None:
    """The session's cookie copied into another browser (its own cookie jar) works there
    until the first browser signs out: then the other's live session is closed, it is
    back at its sign-in page, and the copied cookie gets nothing, even after a reload."""
    first, second = browser.new_context(), browser.new_context()
    try:
        one, other = first.new_page(), second.new_page()
        for opened in (one, other):
            opened.set_default_timeout(20_000)
        _sign_in(one, cluster, role="client")
        second.add_cookies(first.cookies())  # (as a stolen or copied cookie would be)
        other.goto(cluster.url + "/")
        expect(other.locator("#connection")).to_have_attribute("data-state", "live")
        expect(other.locator("#identity")).to_contain_text("client")
        one.get_by_role("button", name="Sign out").click()
        expect(one.locator("#sign-in-view")).to_be_visible()
        expect(other.locator("#sign-in-view")).to_be_visible()  # without a reload
        expect(other.locator("#sign-in-result")).to_contain_text("session ended")
        status = other.evaluate("""async () => (await fetch("/api/v1/list_runs", {method:
            "POST", headers: {"content-type": "application/json", "x-aiki-csrf":
            document.cookie.split("aiki_csrf=")[1] || ""}, body: "{}"})).status""")
        assert status == 401
        other.reload()
        expect(other.locator("#sign-in-view")).to_be_visible()
    finally:
        first.close()
        second.close()


def test_a_page_on_another_site_cannot_act_with_the_cookie(
    page: Page, browser: Browser, cluster: Cluster
) -> None:
    """Signed in, the browser visits a page of another site that posts to the server (a
    form, which needs no permission, and a fetch with the cookie): the form is refused
    (not JSON; besides, the cookie is SameSite=Strict and the Origin another's), and the
    sleeping run it targets is not cancelled."""

    async def start_sleeper(client: aiki.Client) -> str:
        handle = await flows.sleeper.start(client, 600)
        await handle.wait_for_status("sleeping")
        return handle.run_id

    run_id = _with_client(cluster, start_sleeper)
    _sign_in(page, cluster)
    port = cluster.url.rsplit(":", 1)[1]
    target = f"http://127.0.0.1:{port}/api/v1/cancel_run"
    evil = f"http://localhost:{port}/not-the-dashboard"  # another site (another host name)
    page.route(evil, lambda route: route.fulfill(content_type="text/html", body=f"""
        <form id="f" method="POST" action="{target}" enctype="text/plain">
          <input name='{{"run_id": "{run_id}", "x": "' value='"}}'>
        </form>
        <script>
          window.fetched = fetch("{target}", {{method: "POST", credentials: "include",
            mode: "no-cors", body: JSON.stringify({{run_id: "{run_id}"}})}})
            .then(() => "answered", (error) => `refused: ${{error}}`);
        </script>"""))  # fmt: skip
    page.goto(evil)
    fetched = page.evaluate("window.fetched")  # (Chromium may block it before it is sent)
    assert fetched == "answered" or fetched.startswith("refused"), fetched
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    answer = page.locator("pre").inner_text()  # the server's answer to the form
    assert '"code":"unsupported_media_type"' in answer or '"code":"forbidden"' in answer, answer

    async def status(client: aiki.Client) -> str:
        return (await client.handle(run_id).refresh()).status

    assert _with_client(cluster, status) == "sleeping"


def test_a_run_appears_and_completes_live_then_a_sleeping_run_is_cancelled(
    page: Page, cluster: Cluster
) -> None:
    _sign_in(page, cluster)
    page.evaluate("window.__notReloaded = true")

    async def start_quick(client: aiki.Client) -> str:
        return (await flows.quick_flow.start(client, 5)).run_id

    quick = _with_client(cluster, start_quick)
    row = page.locator(f'#runs tr[data-run-id="{quick}"]')
    expect(row.locator('.status[data-status="completed"]')).to_be_visible()
    row.locator("a").click()
    address = page.locator("#tasks .address").first
    expect(address).to_have_text(re.compile(r"^[0-9a-f]{10}…#0$"))  # not 64 characters
    assert (address.get_attribute("title") or "").startswith("task:double:")
    page.go_back()
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    _screenshot(page, "runs")

    async def start_sleeper(client: aiki.Client) -> str:
        handle = await flows.sleeper.start(client, 120)
        await handle.wait_for_status("sleeping")
        return handle.run_id

    sleeping = _with_client(cluster, start_sleeper)
    page.locator(f'#runs tr[data-run-id="{sleeping}"] a').click()
    expect(page.locator('#run-status .status[data-status="sleeping"]')).to_be_visible()
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()  # not paused
    expect(page.locator("#progress")).to_be_hidden()  # no task reported any
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator('#run-status .status[data-status="cancelled"]')).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("from the dashboard, by key")
    for name in ("Cancel", "Pause", "Resume", "Wake up", "Requeue"):
        expect(page.get_by_role("button", name=name)).to_be_disabled()  # the run ended
    first_time = page.locator("#timeline tbody tr td").first.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", first_time), first_time
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    _screenshot(page, "cancelled")

    async def status(client: aiki.Client) -> str:
        return (await client.handle(sleeping).refresh()).status

    assert _with_client(cluster, status) == "cancelled"


def test_a_run_is_found_with_its_family_waits_and_attempts_and_takes_an_event(
    page: Page, cluster: Cluster
) -> None:
    """The search box finds a run by its reference ID (the list shows the reference) and
    by its ID; the run page says what it waits for and takes an event from its form; a
    parent links to its children and a child to its parent; a task's failed attempts and
    a run's duration show, and a failed run is retried from its page."""
    nonce = uuid.uuid4().hex[:8]

    async def start(client: aiki.Client) -> tuple[str, str, str]:
        parent = await flows.parent_flow.start(client, [1, -1])
        waiting = await flows.collect.with_(reference_id=f"dash-{nonce}").start(client, 1)
        wobbly = await flows.wobbly_flow.start(client, f"dash-{nonce}")
        await parent.wait_for_status("completed")
        await waiting.wait_for_status("awaiting_event")
        await wobbly.wait_for_status("failed")
        return parent.run_id, waiting.run_id, wobbly.run_id

    parent, _, wobbly = _with_client(cluster, start)
    _sign_in(page, cluster)
    page.locator("#filter-search").fill(f"dash-{nonce}")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".run-reference")).to_have_text(f"dash-{nonce}")
    rows.first.locator("a").click()
    waits = page.locator("#waits tbody tr")
    expect(waits).to_have_count(1)
    expect(waits.first).to_contain_text("event")
    expect(waits.first).to_contain_text("item")
    page.locator("#event-name").fill("item")
    page.locator("#event-payload").fill('{"name": "from the page"}')
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#event-result")).to_contain_text("sent item #")
    expect(page.locator('#run-status .status[data-status="completed"]')).to_be_visible()
    expect(page.locator("#run-fields")).to_contain_text('"from the page"')
    expect(page.locator("#run-fields")).to_contain_text(re.compile(r"took\s*\d"))

    page.goto(cluster.url + "/#/runs")
    page.locator("#filter-search").fill(parent)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#run-title")).to_contain_text(parent)
    children = page.locator("#children tbody tr")
    expect(children).to_have_count(2)
    children.locator('.status[data-status="failed"]').locator("xpath=../..").locator(
        "a").click()  # fmt: skip
    expect(page.locator("#run-fields")).to_contain_text(parent)
    expect(page.get_by_role("button", name="Retry")).to_be_disabled()  # a child: via its root
    page.locator(f'#run-fields a[href="#/runs/{parent}"]').click()
    expect(page.locator("#run-title")).to_contain_text(parent)

    page.goto(cluster.url + f"/#/runs/{wobbly}")
    result = page.locator("#tasks td.task-result")
    expect(result).to_contain_text("attempt 1 failed")
    expect(result).to_contain_text("attempt 2 failed")
    expect(result).to_contain_text("the service answered nonsense")
    _screenshot(page, "attempts")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#action-result")).to_contain_text("queued again")
    expect(page.locator("#timeline")).to_contain_text("retried")


def test_versions_and_workers_say_who_serves_what(page: Page, cluster: Cluster) -> None:
    """The Versions page lists each version's open runs and live workers; the Workers
    page shows a killed worker disconnected at once."""
    worker, worker_id = cluster.start_worker(WORKER_TARGET)
    _sign_in(page, cluster, path="/#/versions")
    row = page.locator('#versions tr[data-version="w-sleepy@1"]')
    expect(row.locator(".version-workers")).to_contain_text(worker_id)
    page.goto(cluster.url + "/#/workers")
    state = page.locator("#workers tr", has_text=worker_id).locator(".worker-state")
    expect(state).to_have_text("alive")
    worker.kill()

    async def disconnected(client: aiki.Client) -> None:
        async def shown() -> bool:
            return not any(w.id == worker_id and w.connected for w in await client.list_workers())

        await wait_until(shown, interval=0.1)

    _with_client(cluster, disconnected)
    page.reload()
    expect(state).to_have_text("disconnected")
    _screenshot(page, "workers")


def test_a_run_waiting_for_a_limit_says_so_and_the_limits_page_counts_it(
    page: Page, cluster: Cluster
) -> None:
    """Two runs of one account under a mutex (one open run per account): the second's
    page says it waits at the gate for the limit, the Limits page counts one holding and
    one waiting, and once the first ends the second goes on, live."""
    account = f"acct-{uuid.uuid4().hex[:6]}"

    async def start(client: aiki.Client) -> tuple[str, str]:
        first = await flows.exclusive_flow.start(client, flows.Nap(account, 3600.0))
        await first.wait_for_status("sleeping")
        second = await flows.exclusive_flow.start(client, flows.Nap(account, 0.0))
        return first.run_id, second.run_id

    first, second = _with_client(cluster, start)
    _sign_in(page, cluster, path=f"/#/runs/{second}")
    expect(page.locator("#run-gate")).to_contain_text(
        f"waiting for limit 'w-one-per-account' (key {account}: 1 of 1 running)"
    )
    page.goto(cluster.url + "/#/limits")
    row = page.locator('#limits tr[data-limit="w-one-per-account"]')
    expect(row.locator(".limit-holding")).to_have_text("1")
    expect(row.locator(".limit-waiting")).to_have_text("1")
    _screenshot(page, "limits")
    shown = _cli(cluster, "runs", "show", second)
    assert re.search(rf"^gate +waiting for limit 'w-one-per-account' \(key {account}: 1 of 1 "
                     r"running\) \(since ", shown, flags=re.M), shown  # fmt: skip
    listed = _cli(cluster, "limits", "list")
    assert re.search(r"^w-one-per-account +1 +- +1/- +1 +1$", listed, flags=re.M), listed
    page.goto(cluster.url + f"/#/runs/{second}")
    expect(page.locator("#run-gate")).to_be_visible()

    async def wake(client: aiki.Client) -> None:
        await client.handle(first).wakeup()

    _with_client(cluster, wake)
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#run-gate")).to_be_hidden()


def test_schedules_show_their_firings_live_and_can_be_paused(page: Page, cluster: Cluster) -> None:
    """A schedule activated through the SDK appears under Schedules; its fired count rises
    as runs start, with no reload; Pause pauses it."""

    async def activate(client: aiki.Client) -> str:
        every = aiki.schedule(every=1.0, overlap="skip")
        return (await every.activate(client, flows.quick_flow, 7)).id

    _sign_in(page, cluster, path="/#/schedules")
    page.evaluate("window.__notReloaded = true")
    schedule_id = _with_client(cluster, activate)
    row = page.locator(f'#schedules tr[data-schedule-id="{schedule_id}"]')
    expect(row.locator('.status[data-status="active"]')).to_be_visible()
    expect(row.locator("td.fired")).to_have_text(re.compile(r"^([2-9]|\d\d+)$"))
    assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
    _screenshot(page, "schedules")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator('.status[data-status="paused"]')).to_be_visible()
    expect(page.locator("#schedule-result")).to_contain_text("is paused")

    async def deactivate(client: aiki.Client) -> str:
        info = await client.describe_schedule(schedule_id)
        assert info.schedule.status == "paused"
        return (await client.deactivate_schedule(schedule_id)).status

    assert _with_client(cluster, deactivate) == "deactivated"
