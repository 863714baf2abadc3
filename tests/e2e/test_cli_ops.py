"""The operator CLI (``aiki runs|events|workers ...``) against a real server and workers:
tables for people, ``--json`` for scripts, clear errors and exit codes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import orjson
import trio

from tests._deadline import deadline
from tests._processes import ROOT
from tests._waiting import wait_until

from . import waits_flows as flows
from .conftest import Cluster, cli, ok_json

WORKER_TARGET = "tests.e2e.waits_flows:waits_worker"
KEYS_AFTER_START = True
"""The server starts with no admin key, so it says how to bootstrap one (checked below)."""


@deadline(90)
async def test_runs_list_and_show_as_tables_and_json(cluster: Cluster) -> None:
    """A completed run is listed (filtered by workflow and status) and shown with its
    task, its attempts and a timeline; both as a table and as JSON."""
    async with cluster.client() as client:
        handle = await flows.quick_flow.start(client, 21)
        await handle.wait_for_status("completed")
    workflow = flows.quick_flow.workflow
    table = await cli(cluster, "runs", "list", "--workflow", workflow, "--status", "completed")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "WORKFLOW", "STATUS"]
    assert any(handle.run_id in line and "completed" in line for line in table.stdout.splitlines())
    page = ok_json(await cli(cluster, "runs", "list", "--workflow", workflow, "--json"))
    assert isinstance(page, dict)
    assert handle.run_id in [run["id"] for run in page["runs"]]
    none = ok_json(await cli(cluster, "runs", "list", "--workflow", workflow, "--status",
                             "failed", "--json"))  # fmt: skip
    assert isinstance(none, dict)
    assert handle.run_id not in [run["id"] for run in none["runs"]]

    shown = await cli(cluster, "runs", "show", handle.run_id)
    assert shown.returncode == 0, shown.stderr
    for expected in (r"^status +completed$", r"^output +42$", r"^tasks$", r"^timeline$",
                     r" double +completed +1 +42 "):  # fmt: skip
        assert re.search(expected, shown.stdout, re.MULTILINE), (expected, shown.stdout)
    details = ok_json(await cli(cluster, "runs", "show", handle.run_id, "--json"))
    assert isinstance(details, dict)
    assert details["run"]["output"] == 42
    assert [(task["name"], task["state"], task["output"]) for task in details["tasks"]] == [
        ("double", "completed", 42)
    ]
    assert [step["status"] for step in details["timeline"]] == ["queued", "running", "completed"]


@deadline(60)
async def test_runs_show_and_control_report_unknown_runs_with_exit_3(cluster: Cluster) -> None:
    missing = "01900000-0000-7000-8000-000000000000"
    for args in (("runs", "show", missing), ("runs", "cancel", missing)):
        result = await cli(cluster, *args)
        assert result.returncode == 3, (args, result.stderr)
        assert result.stderr.startswith("error: ")
        assert missing in result.stderr


@deadline(60)
async def test_bad_usage_exits_2_and_an_unreachable_server_exits_4(cluster: Cluster) -> None:
    bad_status = await cli(cluster, "runs", "list", "--status", "sleepy")
    assert bad_status.returncode == 2
    assert "sleepy" in bad_status.stderr
    bad_json = await cli(cluster, "events", "send", "some-run", "item", "{not json")
    assert bad_json.returncode == 2
    assert "not JSON" in bad_json.stderr
    down = await cli(cluster, "runs", "list", "--server-url", "http://127.0.0.1:9")
    assert down.returncode == 4
    assert "cannot reach" in down.stderr


@deadline(90)
async def test_runs_watch_prints_every_update_until_the_run_ends(cluster: Cluster) -> None:
    """One JSON line per update, from creation to completion, then it exits."""
    async with cluster.client() as client:
        handle = await flows.sleeper.start(client, 0.3)
        watched = await cli(cluster, "runs", "watch", handle.run_id, "--json")
        human = await cli(cluster, "runs", "watch", handle.run_id)
    assert watched.returncode == 0, watched.stderr
    updates = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert [u["status"] for u in updates] == [
        "queued",
        "running",
        "sleeping",
        "queued",
        "running",
        "completed",
    ]
    assert [u["revision"] for u in updates] == [1, 2, 3, 4, 5, 6]
    assert human.returncode == 0, human.stderr
    assert "r6  running -> completed" in human.stdout.splitlines()[-1]


@deadline(90)
async def test_cancel_pause_resume_wakeup_and_requeue(cluster: Cluster) -> None:
    """Control a sleeping run from the CLI: pause, resume, wake it up (it completes "cut
    short"); cancel another; requeue of a finished run is refused with exit 1."""
    async with cluster.client() as client:
        sleeping = await flows.sleeper.start(client, 60)
        await sleeping.wait_for_status("sleeping")
        paused = ok_json(await cli(cluster, "runs", "pause", sleeping.run_id, "--json"))
        assert isinstance(paused, dict)
        assert (paused["run_id"], paused["status"]) == (sleeping.run_id, "paused")
        resumed = await cli(cluster, "runs", "resume", sleeping.run_id)
        assert resumed.returncode == 0, resumed.stderr
        assert re.fullmatch(rf"run {sleeping.run_id} is (queued|sleeping) now\n", resumed.stdout)
        await sleeping.wait_for_status("sleeping")
        woken = ok_json(await cli(cluster, "runs", "wakeup", sleeping.run_id, "--json"))
        assert woken == {"run_id": sleeping.run_id, "sleeps": 1}
        result = await sleeping.wait_for_status("completed")
        assert result.output == "cut short"

        doomed = await flows.sleeper.start(client, 60)
        await doomed.wait_for_status("sleeping")
        cancelled = await cli(cluster, "runs", "cancel", doomed.run_id, "--reason", "cli test")
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout == f"run {doomed.run_id} is cancelled now\n"  # a sentence
        assert (await doomed.wait_for_status("cancelled")).status == "cancelled"
        details = await client.describe_run(doomed.run_id)
        client_prefix = cluster.keys["client"].split("_")[1]
        assert details.timeline[-1].reason == f"cli test, by key {client_prefix} (test client)"
        shown = await cli(cluster, "runs", "show", doomed.run_id)
        assert f"by key {client_prefix}" in shown.stdout  # who did it, in the history

    refused = await cli(cluster, "runs", "requeue", sleeping.run_id)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ")


@deadline(90)
async def test_events_send_delivers_and_deduplicates(cluster: Cluster) -> None:
    async with cluster.client() as client:
        handle = await flows.collect.start(client, 2)
        first = await cli(cluster, "events", "send", handle.run_id, "item", '{"name": "a"}',
                          "--reference-id", "item-a")  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith(f"sent item #1 to {handle.run_id}")  # seq counts from 1
        repeat = ("events", "send", handle.run_id, "item", '{"name": "a"}', "--reference-id",
                  "item-a", "--json")  # fmt: skip
        again = ok_json(await cli(cluster, *repeat))
        assert isinstance(again, dict)
        assert again["duplicate"] is True
        # "done" goes first: it is kept until the run waits for it, so the run's 1 s
        # timeout on that wait cannot race a slow CLI start
        ok_json(await cli(cluster, "events", "send", handle.run_id, "done", "--json"))
        ok_json(await cli(cluster, "events", "send", handle.run_id, "item", '{"name": "b"}',
                          "--json"))  # fmt: skip
        result = await handle.wait_for_status("completed")
    assert result.output == ["a", "b", "done"]
    invalid = await cli(cluster, "events", "send", handle.run_id, "item", '{"nom": 1}')
    assert invalid.returncode == 1
    assert "error: " in invalid.stderr
    undeclared = await cli(cluster, "events", "send", handle.run_id, "itme", '{"name": "c"}')
    assert undeclared.returncode == 1, "a mistake in the request, not 3 (no such run)"
    assert "declares no event 'itme' (declared: done, item)" in undeclared.stderr


@deadline(60)
async def test_workers_list_shows_liveness_capacity_and_versions(cluster: Cluster) -> None:
    found = ok_json(await cli(cluster, "workers", "list", "--json"))
    assert isinstance(found, list)
    alive = [worker for worker in found if worker["alive"]]
    assert len(alive) >= 2
    for worker in alive:
        assert worker["concurrency"] == 8
        assert f"{flows.sleeper.workflow}@1" in worker["versions"]
    table = await cli(cluster, "workers", "list")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATE", "RUNS"]
    assert sum("alive" in line for line in table.stdout.splitlines()) >= 2


@deadline(90)
async def test_runs_show_says_what_a_waiting_run_waits_for(cluster: Cluster) -> None:
    """A sleeping run shows when it wakes; a run waiting for an event names the event."""
    async with cluster.client() as client:
        sleeping = await flows.sleeper.start(client, 3600.0)
        waiting = await flows.collect.start(client, 1)
        await sleeping.wait_for_status("sleeping")
        await waiting.wait_for_status("awaiting_event")
        details = await client.describe_run(sleeping.run_id)
        assert details.run.wake_at is not None
        assert details.run.wake_at > details.run.updated_at
        assert [(w.kind, w.key, w.seq) for w in details.waits] == [("sleep", "nap", 0)]
        assert details.waits[0].until == details.run.wake_at
        shown = await cli(cluster, "runs", "show", sleeping.run_id)
        assert re.search(r"^wakes +\d{4}-", shown.stdout, re.MULTILINE), shown.stdout
        assert re.search(r"^waits for\nKIND +NAME +SEQ +UNTIL +SINCE\nsleep +nap +0 +\d{4}-",
                         shown.stdout, re.MULTILINE), shown.stdout  # fmt: skip
        shown = await cli(cluster, "runs", "show", waiting.run_id)
        assert re.search(r"^event +item +0 +- +\d{4}-", shown.stdout, re.MULTILINE), shown.stdout
        await sleeping.cancel()
        await waiting.cancel()


@deadline(90)
async def test_a_killed_worker_is_shown_disconnected_at_once(cluster: Cluster) -> None:
    """SIGKILLed, a worker's session ends and ``workers list`` says so within moments
    (its claims still time out as before: it is not declared gone)."""
    worker, worker_id = await trio.to_thread.run_sync(cluster.start_worker, WORKER_TARGET)
    before = await cli(cluster, "workers", "list")
    assert re.search(rf"^{re.escape(worker_id)} +alive ", before.stdout, re.MULTILINE)
    worker.kill()

    async def shown_disconnected() -> bool:
        listed = await cli(cluster, "workers", "list")
        return re.search(rf"^{re.escape(worker_id)} +disconnected ", listed.stdout,
                         re.MULTILINE) is not None  # fmt: skip

    with trio.fail_after(20):  # (the lease is 30 s: this is the session's end, not it)
        await wait_until(shown_disconnected, interval=0.2)
    found = ok_json(await cli(cluster, "workers", "list", "--json"))
    assert isinstance(found, list)
    (listed,) = [entry for entry in found if entry["id"] == worker_id]
    assert (listed["alive"], listed["connected"]) == (True, False)


@deadline(90)
async def test_the_readmes_key_commands_work_as_written(cluster: Cluster) -> None:
    """Every ``aiki keys`` line of the README, in its order, with its environment: the
    bootstrap's key acts for the rest, and ``PREFIX`` is the prefix of the key made just
    before the revocation."""
    text = (ROOT / "README.md").read_text()
    lines = [shlex.split(line, comments=True)[1:] for line in text.splitlines()
             if line.startswith("aiki keys ")]  # fmt: skip
    assert [argv[:2] for argv in lines] == [["keys", "create"]] * 3 + [
        ["keys", "list"], ["keys", "revoke"], ["keys", "whoami"]]  # fmt: skip
    base = {key: value for key, value in os.environ.items() if not key.startswith("AIKI_")}
    env = {**base, "AIKI_DATABASE_URL": cluster.database_url,
           "AIKI_SERVER_URL": cluster.server_urls}  # fmt: skip
    made = ""
    for argv in lines:
        argv = [made.split("_")[1] if arg == "PREFIX" else arg for arg in argv]
        result = await trio.to_thread.run_sync(lambda argv=argv: subprocess.run(
            [sys.executable, "-m", "aiki", *argv], cwd=ROOT, capture_output=True, text=True,
            timeout=60, env=env))  # fmt: skip
        assert result.returncode == 0, (argv, result.stderr)
        if argv[1] == "create":
            made = result.stdout.strip().splitlines()[-1]
            assert made.startswith("aiki_"), result.stdout
            env.setdefault("AIKI_API_KEY", made)  # (the bootstrap's: `export AIKI_API_KEY=`)
        if argv[1] == "whoami":
            assert "admin in every namespace" in result.stdout


@deadline(90)
async def test_keys_are_made_listed_and_revoked_from_the_command_line(cluster: Cluster) -> None:
    """The server said how to bootstrap the first admin key; with one, ``aiki keys``
    creates a key (shown once), lists it with its last use, revokes it; the revoked key's
    commands exit 5, and a client key may not manage keys (exit 1, naming the role)."""
    assert "aiki keys create --bootstrap" in cluster.server.log.read_text()
    created = await cli(cluster, "keys", "create", "--role", "viewer", "--name", "auditor",
                        "--expires-in", "30d", role="admin")  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("aiki_")
    assert "shown only now" in created.stderr
    prefix = key.split("_")[1]
    whoami = await cli(cluster, "keys", "whoami", role="admin")
    assert "admin in every namespace" in whoami.stdout, whoami
    listed = await cli(cluster, "keys", "list", role="admin")
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(prefix)]
    assert row.split()[1:5] == ["viewer", "default", "active", "auditor"]
    used = await cli(cluster, "runs", "list", key=key)
    assert used.returncode == 0, used.stderr
    keys = ok_json(await cli(cluster, "keys", "list", "--json", role="admin"))
    assert isinstance(keys, list)
    (found,) = [entry for entry in keys if entry["prefix"] == prefix]
    assert found["last_used_at"] is not None
    assert found["expires_at"] is not None
    refused = await cli(cluster, "keys", "list")  # a client key
    assert refused.returncode == 1
    assert "list_keys needs a key with role admin" in refused.stderr
    revoked = await cli(cluster, "keys", "revoke", prefix, role="admin")
    assert revoked.returncode == 0, revoked.stderr
    after = await cli(cluster, "runs", "list", key=key)
    assert after.returncode == 5, after
    assert "not valid" in after.stderr
