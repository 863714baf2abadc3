"""Authentication and roles, with authentication on (the default): every operation of the
registry, for every role and for no key at all, over every carrier: HTTP with a bearer key,
the WebSocket session (the key checked at the upgrade), and the dashboard's carriers (the
same, with the cookie its sign-in sets). A new operation cannot forget its roles: the
registry declares them, and this test walks the registry."""

from __future__ import annotations

import itertools

import httpx
import orjson
import pytest
import trio

from aiki.protocol import MAX_MESSAGE_BYTES, OPERATIONS, session_url
from aiki.server._auth import CACHE_SECONDS
from aiki.server.store import keys
from tests._deadline import deadline
from tests._waiting import wait_until
from transport import WebSocketError
from transport.websocket import WebSocketClient, open_websocket

from .conftest import Api, bearer, open_api

ROLES = ("viewer", "client", "worker", "admin")
ROLE_REFUSAL = "needs a key with role"


async def _signed_in(api: Api, key: str) -> dict[str, str]:
    """Sign in as the dashboard does; the headers its page sends: the cookies the browser
    keeps, and the CSRF token page script sends back."""
    response = await api.http.post(f"{api.url}/auth/sign-in", json={"key": key})
    assert response.status_code == 200, response.text
    cookies = {}
    for set_cookie in response.headers.get_list("set-cookie"):
        attributes = {part.strip().lower() for part in set_cookie.split(";")}
        assert {"samesite=strict", "path=/"} <= attributes, set_cookie
        assert "secure" not in attributes  # (plain HTTP here; Secure over TLS)
        name, _, value = set_cookie.split(";")[0].partition("=")
        cookies[name] = (value, "httponly" in attributes)
    session, csrf = cookies["aiki_session"], cookies["aiki_csrf"]
    assert (session[1], csrf[1]) == (True, False)  # page script reads the CSRF token only
    assert session[0].startswith("aikis_")
    assert key not in session[0] + csrf[0]
    return {"cookie": f"aiki_session={session[0]}; aiki_csrf={csrf[0]}", "x-aiki-csrf": csrf[0]}


async def _over_http(api: Api, headers: dict[str, str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each operation (but the session-only ones) posted with ``headers`` and ``{}``."""
    answers = {}
    async with httpx.AsyncClient(timeout=30) as http:  # (not the fixture's: it has a key)
        for operation in OPERATIONS:
            if operation.session_only:
                continue
            response = await http.post(f"{api.url}/api/v1/{operation.name}", json={},
                                       headers=headers)  # fmt: skip
            error = response.json().get("error") or {"code": "ok", "message": ""}
            answers[operation.name] = (response.status_code, error)
    return answers


async def _over_session(
    api: Api, headers: dict[str, str]
) -> dict[str, dict[str, str]] | WebSocketError:
    """Each operation sent with ``{}`` over one session opened with ``headers``: the error
    of each, or why the upgrade was refused."""
    ids = itertools.count(1)
    answers = {}
    try:
        async with open_websocket(session_url(api.url), max_message_bytes=MAX_MESSAGE_BYTES,
                                  headers=headers) as websocket:  # fmt: skip
            for operation in OPERATIONS:
                request_id = next(ids)
                await websocket.send(orjson.dumps(
                    {"id": request_id, "op": operation.name, "body": {}}).decode())  # fmt: skip
                while (frame := orjson.loads(await websocket.receive())).get("id") != request_id:
                    pass
                answers[operation.name] = frame.get("error") or {"code": "ok", "message": ""}
    except WebSocketError as refused:
        return refused
    return answers


@pytest.mark.parametrize("role", [None, *ROLES])
@deadline(60)
async def test_every_operation_refuses_no_key_and_too_low_a_role_on_every_carrier(
    api: Api, role: str | None
) -> None:
    """No key: 401 on HTTP, and the upgrade refused 401 (no session at all). A key whose
    role the operation does not declare: 403 naming the roles that may, on each carrier.
    A key whose role it declares: past authorization (the empty body may still be refused,
    or a worker operation sent to a worker's session only)."""
    key = api.keys[role] if role is not None else None
    carriers = {"http": bearer(key), "session": bearer(key)}
    if key is not None:
        cookie = await _signed_in(api, key)
        carriers |= {"dashboard http": cookie, "dashboard session": cookie}
    wrong: list[str] = []
    for carrier, headers in carriers.items():
        if carrier.endswith("session"):
            answers = await _over_session(api, headers)
            if role is None:
                assert isinstance(answers, WebSocketError), carrier
                assert answers.status == 401
                assert orjson.loads(answers.body)["error"]["code"] == "unauthenticated"
                continue
            assert isinstance(answers, dict)
            errors = answers
        else:
            posted = await _over_http(api, headers)
            if role is None:
                assert {status for status, _ in posted.values()} == {401}, posted
                assert {error["code"] for _, error in posted.values()} == {"unauthenticated"}
                continue
            errors = {name: error for name, (_, error) in posted.items()}
            for name, (status, error) in posted.items():
                if error["code"] == "forbidden" and status != 403:
                    wrong.append(f"{carrier} {name}: forbidden as HTTP {status}")
        assert role is not None
        for name, error in errors.items():
            declared = OPERATIONS.by_name[name].callers
            refused = error["code"] == "forbidden" and ROLE_REFUSAL in error["message"]
            if role in declared and (refused or error["code"] == "unauthenticated"):
                wrong.append(f"{carrier} {name}: {role} refused: {error}")
            if role not in declared and not refused:
                wrong.append(f"{carrier} {name}: {role} not refused: {error}")
            if refused:
                assert " or ".join(sorted(declared)) in error["message"]
        expected = {op.name for op in OPERATIONS if carrier.endswith("session")
                    or not op.session_only}  # fmt: skip
        assert set(errors) == expected, carrier
    assert wrong == [], "\n".join(wrong)


@deadline(30)
async def test_a_key_that_is_not_valid_is_refused_like_no_key(api: Api) -> None:
    """Malformed, unknown (well-formed), another scheme, and revoked keys: 401 with a message
    that names the problem and a WWW-Authenticate challenge; open paths stay open."""
    unknown = keys.new_key()[0]
    presented = ({"authorization": "Bearer nonsense"}, bearer(unknown),
                 {"authorization": f"Basic {unknown}"},
                 {"cookie": "aiki_session=nonsense"},
                 {"cookie": f"aiki_session={unknown}"})  # fmt: skip
    for headers in presented:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(f"{api.url}/api/v1/list_runs", json={}, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthenticated"
            metrics = await http.get(f"{api.url}/metrics", headers=headers)
            assert metrics.status_code == 401
            for open_path in ("/healthz", "/readyz", "/", "/dashboard/app.js"):
                assert (await http.get(f"{api.url}{open_path}")).status_code == 200, open_path
    created = await api.ok("create_key", {"role": "viewer", "namespace": "default"})
    key = str(created["key"])
    async with httpx.AsyncClient(timeout=30, headers=bearer(key)) as http:
        assert (await http.post(f"{api.url}/api/v1/list_runs", json={})).status_code == 200
        await api.ok("revoke_key", {"prefix": created["info"]["prefix"]})  # type: ignore[index]
        refused = await http.post(f"{api.url}/api/v1/list_runs", json={})
        assert refused.status_code == 401  # this server forgets it at once
        assert "revoked" in refused.json()["error"]["message"]
    wrong = await api.http.post(f"{api.url}/auth/sign-in", json={"key": unknown})
    assert (wrong.status_code, "set-cookie" in wrong.headers) == (401, False)


async def _until_closed(websocket: WebSocketClient) -> WebSocketError:
    """Read until the server closes the session; why it did."""
    try:
        while True:
            await websocket.receive()
    except WebSocketError as closed:
        return closed


@deadline(60)
async def test_a_revoked_key_is_refused_by_another_server_within_a_second(
    pg_url: str, redis_url: str
) -> None:
    """Two servers on one database. A key used on the second (so it is in its cache) is
    revoked through the first: the second refuses it within `CACHE_SECONDS`, on new
    requests and new sessions, and closes the session it had open with it."""
    async with open_api(pg_url, redis_url) as first, open_api(pg_url, redis_url) as second:
        created = await first.ok("create_key", {"role": "viewer", "name": "leaver"})
        key, prefix = str(created["key"]), created["info"]["prefix"]  # type: ignore[index]
        async with (
            httpx.AsyncClient(timeout=30, headers=bearer(key)) as http,
            open_websocket(session_url(second.url), max_message_bytes=MAX_MESSAGE_BYTES,
                           headers=bearer(key)) as websocket,
        ):  # fmt: skip
            listing = f"{second.url}/api/v1/list_runs"
            assert (await http.post(listing, json={})).status_code == 200
            await first.ok("revoke_key", {"prefix": prefix})
            revoked_at = trio.current_time()

            async def refused() -> bool:
                return (await http.post(listing, json={})).status_code == 401

            with trio.fail_after(CACHE_SECONDS + 0.5):
                await wait_until(refused, interval=0.02)
            assert trio.current_time() - revoked_at <= CACHE_SECONDS + 0.1
            with pytest.raises(WebSocketError) as upgrade:
                async with open_websocket(session_url(second.url),
                                          max_message_bytes=MAX_MESSAGE_BYTES,
                                          headers=bearer(key)):  # fmt: skip
                    pass
            assert upgrade.value.status == 401
            with trio.fail_after(2 * CACHE_SECONDS + 0.5):
                closed = await _until_closed(websocket)
            assert "1008" in str(closed), closed


async def _status(url: str, headers: dict[str, str], path: str = "/api/v1/list_runs") -> int:
    async with httpx.AsyncClient(timeout=30) as http:  # (no key of its own)
        return (await http.post(f"{url}{path}", json={}, headers=headers)).status_code


@deadline(30)
async def test_a_signed_in_page_changes_nothing_without_its_csrf_token(api: Api) -> None:
    """The dashboard's cookie alone does not make a POST: without the session's CSRF
    token, or with another's, or from another site's page (its Origin), it is refused 403;
    and another site's page cannot sign the browser in either."""
    signed_in = await _signed_in(api, api.keys["client"])
    other = await _signed_in(api, api.keys["client"])
    assert await _status(api.url, signed_in) == 200
    cookie_only = {"cookie": signed_in["cookie"]}
    for headers in (cookie_only, {**cookie_only, "x-aiki-csrf": other["x-aiki-csrf"]},
                    {**signed_in, "origin": "http://evil.example"}):  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(f"{api.url}/api/v1/list_runs", json={}, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "forbidden"
    assert await _status(api.url, {**signed_in, "origin": api.url}) == 200  # its own page
    async with httpx.AsyncClient(timeout=30) as http:
        elsewhere = await http.post(f"{api.url}/auth/sign-in", json={"key": api.keys["client"]},
                                    headers={"origin": "http://evil.example"})  # fmt: skip
        assert (elsewhere.status_code, "set-cookie" in elsewhere.headers) == (403, False)
        kept = await http.post(f"{api.url}/auth/sign-out", json={}, headers=cookie_only)
        assert kept.status_code == 403  # (signing out takes the token too)
    assert await _status(api.url, signed_in) == 200


@deadline(60)
async def test_signing_out_ends_the_session_on_every_server_and_revoking_the_key_ends_all(
    pg_url: str, redis_url: str
) -> None:
    """A dashboard session used on a second server (so it is in its cache, with a
    WebSocket open) is signed out through the first: the second refuses its cookie within
    `CACHE_SECONDS` and closes its session. Revoking a key ends its other sessions."""
    async with open_api(pg_url, redis_url) as first, open_api(pg_url, redis_url) as second:
        created = await first.ok("create_key", {"role": "viewer", "namespace": "default"})
        key, prefix = str(created["key"]), created["info"]["prefix"]  # type: ignore[index]
        leaving, staying = await _signed_in(first, key), await _signed_in(first, key)
        async with open_websocket(session_url(second.url), max_message_bytes=MAX_MESSAGE_BYTES,
                                  headers=leaving) as websocket:  # fmt: skip
            assert await _status(second.url, leaving) == 200
            async with httpx.AsyncClient(timeout=30) as http:
                out = await http.post(f"{first.url}/auth/sign-out", json={}, headers=leaving)
            assert out.status_code == 200
            assert await _status(first.url, leaving) == 401  # this server forgets it at once
            signed_out_at = trio.current_time()

            async def refused() -> bool:
                return await _status(second.url, leaving) == 401

            with trio.fail_after(CACHE_SECONDS + 0.5):
                await wait_until(refused, interval=0.02)
            assert trio.current_time() - signed_out_at <= CACHE_SECONDS + 0.1
            with trio.fail_after(2 * CACHE_SECONDS + 0.5):
                closed = await _until_closed(websocket)
            assert "1008" in str(closed), closed
        assert await _status(second.url, staying) == 200  # another sign-in of the key
        await first.ok("revoke_key", {"prefix": prefix})

        async def ended() -> bool:
            return await _status(second.url, staying) == 401

        with trio.fail_after(CACHE_SECONDS + 0.5):
            await wait_until(ended, interval=0.02)
        async with httpx.AsyncClient(timeout=30) as http:  # signing in again: no
            again = await http.post(f"{first.url}/auth/sign-in", json={"key": key})
        assert again.status_code == 401


@deadline(60)
async def test_an_address_presenting_wrong_keys_is_slowed_down(pg_url: str, redis_url: str) -> None:
    """After its burst of keys that are not valid, an address gets 429 with Retry-After
    for its next key, which is not even looked up; a key of it that was valid at its last
    lookup still passes (looked up again once the cache's second is over); once it
    waited, a wrong key is a 401 again."""
    async with open_api(pg_url, redis_url, wrong_keys_per_second=0.5, wrong_key_burst=5) as api:
        good = bearer(api.keys["viewer"])
        listing = f"{api.url}/api/v1/list_runs"
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.post(listing, json={}, headers=good)).status_code == 200
            for _ in range(5):
                wrong = bearer(keys.new_key()[0])
                assert (await http.post(listing, json={}, headers=wrong)).status_code == 401
            slowed = await http.post(listing, json={}, headers=bearer(keys.new_key()[0]))
            assert slowed.status_code == 429
            assert int(slowed.headers["retry-after"]) >= 1
            error = slowed.json()["error"]
            assert error["code"] == "rate_limited"
            assert 0 < error["retry_after_seconds"] <= 2.0 + 0.01
            await trio.sleep(CACHE_SECONDS)  # (the good key's entry is stale: looked up again)
            assert (await http.post(listing, json={}, headers=good)).status_code == 200
            await trio.sleep(error["retry_after_seconds"])
            again = await http.post(listing, json={}, headers=bearer(keys.new_key()[0]))
            assert again.status_code == 401
