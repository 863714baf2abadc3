"""Several server URLs: parsing, the order servers are tried in, and a client whose first
server is unreachable reaching the next, over its session and over HTTP."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

import aiki
from aiki.client import Servers, parse_server_urls
from tests._deadline import deadline

from .conftest import Api


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL whose port refuses connections (bound, never listening)."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{reserved.getsockname()[1]}"


def test_urls_are_a_comma_separated_list_of_http_urls() -> None:
    assert parse_server_urls(" http://a:1/ ,https://b:2") == ("http://a:1", "https://b:2")
    assert parse_server_urls(["http://a:1"]) == ("http://a:1",)
    for bad, says in [("", "at least one"), ("http://a:1,b:2", "'b:2': must be"),
                      ("ws://a:1", "'ws://a:1': must be")]:  # fmt: skip
        with pytest.raises(ValueError, match=says):
            parse_server_urls(bad)


async def test_servers_are_tried_in_turn_once_around_and_a_refusal_is_not_retried() -> None:
    servers = Servers("http://a:1,http://b:2,http://c:3", random.Random(3))
    first = servers.current
    servers.failed("http://elsewhere:9")  # not the one in use: nothing moves
    assert servers.current == first
    servers.failed(first)
    servers.failed(first)  # the same failure reported twice moves once
    assert servers.urls.index(servers.current) == (servers.urls.index(first) + 1) % 3
    tried: list[str] = []

    async def unreachable(url: str) -> str:
        tried.append(url)
        raise aiki.UnavailableError(f"{url} is down")

    with pytest.raises(aiki.UnavailableError):
        await servers.first_reachable(unreachable)
    assert sorted(tried) == sorted(servers.urls)

    async def refusing(url: str) -> str:
        tried.append(url)
        raise aiki.UnauthenticatedError("bad key")

    tried.clear()
    with pytest.raises(aiki.UnauthenticatedError):
        await servers.first_reachable(refusing)
    assert len(tried) == 1


@deadline(30)
@pytest.mark.parametrize("session", [True, False])
async def test_a_client_whose_first_server_is_down_reaches_the_next(
    api: Api, dead_url: str, session: bool
) -> None:
    async with aiki.Client([dead_url, api.url], api_key=api.keys["client"],
                           session=session) as client:  # fmt: skip
        while client.servers.current != dead_url:
            client.servers.failed(client.servers.current)
        identity = await client.whoami()
        assert identity.role == "client"
        assert client.servers.current == api.url
    assert client.url == f"{dead_url},{api.url}"
