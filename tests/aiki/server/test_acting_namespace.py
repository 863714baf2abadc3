"""An admin key of every namespace acts in one namespace per request (the ``aiki-namespace``
header; `aiki.Client`'s ``namespace``): what it makes goes there and it sees that
namespace alone, as that namespace's admin would. A key of one namespace may name only
its own; a name that is not a namespace's is a 400 naming the header."""

from __future__ import annotations

import httpx
import pytest

import aiki
from aiki.protocol import MAX_MESSAGE_BYTES, session_url
from tests._deadline import deadline
from transport import WebSocketError
from transport.websocket import open_websocket

from .conftest import Api, bearer


async def _post(api: Api, headers: dict[str, str], operation: str, body: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{api.url}/api/v1/{operation}", json=body, headers=headers)


@deadline(60)
async def test_an_every_namespace_admin_acts_in_the_namespace_it_names(api: Api) -> None:
    admin = api.keys["admin"]
    in_x = {**bearer(admin), "aiki-namespace": "tenant-x"}
    made = await _post(api, in_x, "create_key", {"role": "client", "namespace": "tenant-x"})
    assert made.status_code == 200, made.text
    elsewhere = await _post(api, in_x, "create_key", {"role": "client", "namespace": "default"})
    assert elsewhere.status_code in (403, 404), elsewhere.text  # as tenant-x's admin would
    listed = (await _post(api, in_x, "list_keys", {})).json()["keys"]
    assert {key["namespace"] for key in listed} == {"tenant-x"}
    everything = (await _post(api, bearer(admin), "list_keys", {})).json()["keys"]
    assert {"tenant-x", "default"} <= {key["namespace"] for key in everything}  # no header
    who = (await _post(api, in_x, "whoami", {})).json()
    assert who["namespace"] == "tenant-x"

    async with aiki.Client(api.url, api_key=admin, namespace="tenant-x") as client:
        assert (await client.whoami()).namespace == "tenant-x"  # over the session
    async with open_websocket(session_url(api.url), max_message_bytes=MAX_MESSAGE_BYTES,
                              headers=in_x):  # fmt: skip
        pass  # (the upgrade is accepted)


@deadline(60)
async def test_a_key_of_one_namespace_names_only_its_own(api: Api) -> None:
    client = api.keys["client"]  # of namespace default
    own = await _post(api, {**bearer(client), "aiki-namespace": "default"}, "list_runs", {})
    assert own.status_code == 200
    other = await _post(api, {**bearer(client), "aiki-namespace": "tenant-x"}, "list_runs", {})
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "forbidden"
    assert "'default' only" in other.json()["error"]["message"]
    with pytest.raises(WebSocketError) as refused:
        async with open_websocket(
            session_url(api.url),
            max_message_bytes=MAX_MESSAGE_BYTES,
            headers={**bearer(client), "aiki-namespace": "tenant-x"},
        ):
            pass
    assert refused.value.status == 403
    for bad in ("Tenant_X", "-x", "x" * 64, ""):
        answer = await _post(api, {**bearer(api.keys["admin"]), "aiki-namespace": bad},
                             "list_runs", {})  # fmt: skip
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "bad_request"
        assert "aiki-namespace" in answer.json()["error"]["message"]
