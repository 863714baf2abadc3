"""No API key is ever printed: every error path of the CLI, the SDK, the server and a
worker (a wrong key, a key with spaces around it, a revoked key, a key of the wrong
role) is scanned for the secrets of the keys involved; none appears, in part or whole."""

from __future__ import annotations

import traceback
import uuid

import pytest
import trio

import aiki
from tests._deadline import deadline
from tests._processes import start_aiki

from .conftest import Cluster, cli

WORKER_TARGET = "tests.e2e.retry_flows:retry_worker"


def _secret(key: str) -> str:
    prefix = key.split("_")[1]
    return key.removeprefix(f"aiki_{prefix}_")


def _leaks(text: str, keys: list[str]) -> list[str]:
    """The keys whose secret shows in ``text``, whole or any 12 characters of it."""
    found = []
    for key in keys:
        secret = _secret(key)
        if any(secret[i : i + 12] in text for i in range(len(secret) - 11)):
            found.append(key[:18])
    return found


@deadline(150)
async def test_no_error_path_prints_a_key(cluster: Cluster) -> None:
    async with cluster.client("admin") as admin:
        revoked = (await admin.create_key("worker", name="revoked")).key
        await admin.revoke_key(revoked.split("_")[1])
        viewer = (await admin.create_key("viewer", name="viewer")).key
        worker = (await admin.create_key("worker", name="worker")).key
    wrong = worker[:-6] + ("AAAAAA" if not worker.endswith("AAAAAA") else "BBBBBB")
    spaced = f"  {worker}\n"
    keys = [revoked, viewer, worker, wrong]
    printed: list[tuple[str, str]] = []

    # The CLI: exit 5 for keys that are not valid, 1 for a role that may not act.
    for key, args, code in (
        (wrong, ("runs", "list"), 5),
        (revoked, ("runs", "list"), 5),
        (f"{wrong[:20]} {wrong[20:]}", ("runs", "list"), 5),
        (viewer, ("runs", "retry", "--workflow", "e2e-order"), 1),
        (worker, ("runs", "list"), 1),
        (spaced, ("workers", "list"), 1),
    ):
        result = await cli(cluster, *args, key=key)
        assert result.returncode == code, (args, result.stderr)
        assert "Traceback" not in result.stderr
        printed.append((f"cli {args} {key[:18]}", result.stdout + result.stderr))

    # The SDK: the errors' messages, reprs and tracebacks.
    refusals: list[tuple[str, type[aiki.AikiError]]] = [
        (wrong, aiki.UnauthenticatedError), (revoked, aiki.UnauthenticatedError),
        (viewer, aiki.ForbiddenError), (spaced, aiki.ForbiddenError),
    ]  # fmt: skip
    for key, expected in refusals:
        with pytest.raises(expected) as refused:
            async with aiki.Client(cluster.server_urls, api_key=key) as client:
                await client.retry_failed("e2e-order")
        assert not isinstance(refused.value, aiki.UnavailableError)
        text = "".join(traceback.format_exception(refused.value)) + repr(refused.value)
        printed.append((f"sdk {key[:18]}", text))

    # Workers: those whose key is not valid, or not a worker's, stop with a clear error;
    # one whose key has spaces around it serves.
    for key, serves in ((wrong, False), (revoked, False), (viewer, False), (spaced, True)):
        env = {**cluster.env(), "AIKI_API_KEY": key}
        process = start_aiki(
            ["worker", WORKER_TARGET, "--server-url", cluster.server_urls,
             "--redis-url", cluster.redis_url, "--worker-id", f"hygiene-{uuid.uuid4().hex[:6]}"],
            cluster.logs / f"hygiene-{uuid.uuid4().hex[:6]}.log", env,
        )  # fmt: skip
        try:
            if serves:
                await trio.to_thread.run_sync(process.wait_ready, r"aiki worker (\S+) serving")
            else:
                with trio.fail_after(60):
                    code = await trio.to_thread.run_sync(process.process.wait)
                assert code != 0
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(40):
                await trio.to_thread.run_sync(process.stop)
        out = process.process.stdout.read() if process.process.stdout else ""
        printed.append((f"worker {key[:18]}", out + process.log.read_text(errors="replace")))
        if not serves:
            assert "error" in printed[-1][1].lower(), printed[-1][1]

    # The servers' logs, after all of it.
    for log in sorted(cluster.logs.glob("server-*.log")):
        printed.append((log.name, log.read_text(errors="replace")))

    leaked = {where: found for where, text in printed if (found := _leaks(text, keys))}
    assert leaked == {}
